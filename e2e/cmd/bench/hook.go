package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
	"golang.org/x/sys/unix"
)

// hookProcesses times the hook as runc runs it, a process of its own on a
// fresh overlay of the image's root filesystem each time (the upper
// directory on the disk, as a container's is; the staging on tmpfs, as /run
// is), against its floor: writefloor, a Go program that starts and writes
// the very files the hook writes, and nothing else. The two alternate in a
// shuffled order, so that whatever this machine does meanwhile weighs on
// both alike.
func (b *bench) hookProcesses(ctx context.Context, r *report) error {
	rootfs, err := testbed.ImageRootfs(ctx, b.image)
	if err != nil {
		return err
	}
	floor, err := testbed.GoProgram(ctx, "writefloor", logf)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("/var/tmp", "cainjekt-bench-hook-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	floorBin := filepath.Join(work, "writefloor")
	if err := os.WriteFile(floorBin, floor, 0o755); err != nil {
		return err
	}
	h := hookBed{lower: rootfs, work: work, staging: filepath.Join(b.dir, "hook-staging"), caFile: b.caFile,
		hook: filepath.Join(filepath.Dir(*bin), "cainjekt-hook"), env: b.imageEnv, processors: r.processors}
	if err := os.Mkdir(h.staging, 0o700); err != nil {
		return err
	}
	// What the hook writes, once, for the floor to write the same.
	set := filepath.Join(work, "set")
	if _, _, err := h.run(ctx, 0, func(c *container) error { return c.keep(set) }); err != nil {
		return err
	}
	r.floorFiles, r.floorBytes = treeSize(set)
	for i := 1; i <= *rounds; i++ {
		order := []bool{true, false}
		rand.Shuffle(len(order), func(a, c int) { order[a], order[c] = order[c], order[a] })
		for _, hook := range order {
			if hook {
				wall, own, err := h.run(ctx, i, nil)
				if err != nil {
					return err
				}
				r.hookWall, r.hookOwn = append(r.hookWall, wall), append(r.hookOwn, own)
				continue
			}
			wall, err := h.floor(ctx, i, floorBin, set)
			if err != nil {
				return err
			}
			r.floorWall = append(r.floorWall, wall)
		}
	}
	return nil
}

// hookBed makes containers as runc presents them to the hook.
type hookBed struct {
	lower, work, staging, caFile, hook string
	env, processors                    []string // as the plugin gives them to an injected container of the image
}

// container is one: its OCI bundle with the rootfs mounted, its staging.
type container struct {
	id, bundle, rootfs, upper, staging string
}

func (h hookBed) create(i int) (*container, error) {
	c := &container{id: fmt.Sprintf("%064x", i+1)}
	c.bundle = filepath.Join(h.work, c.id)
	c.rootfs, c.upper, c.staging = filepath.Join(c.bundle, "rootfs"), filepath.Join(c.bundle, "upper"), filepath.Join(h.staging, c.id)
	for _, d := range []string{c.rootfs, c.upper, filepath.Join(c.bundle, "work"), c.staging} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	opts := "lowerdir=" + h.lower + ",upperdir=" + c.upper + ",workdir=" + filepath.Join(c.bundle, "work")
	if err := unix.Mount("overlay", c.rootfs, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("mount the overlay: %w", err)
	}
	config, _ := json.Marshal(map[string]any{"ociVersion": "1.3.0", "root": map[string]string{"path": "rootfs"},
		"process": map[string]any{"env": h.env}})
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), config, 0o600); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(h.caFile)
	if err == nil {
		err = os.WriteFile(filepath.Join(c.staging, "ca.pem"), ca, 0o644)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(c.staging, "bundle.pem"), ca, 0o644)
	}
	return c, err
}

func (c *container) remove() {
	unix.Unmount(c.rootfs, unix.MNT_DETACH)
	os.RemoveAll(c.bundle)
	os.RemoveAll(c.staging)
}

// keep copies what the hook wrote, in the rootfs and the staging, to set.
func (c *container) keep(set string) error {
	if err := os.Mkdir(set, 0o755); err != nil {
		return err
	}
	for from, to := range map[string]string{c.upper: "rootfs", c.staging: "staging"} {
		if err := exec.Command("cp", "-a", from, filepath.Join(set, to)).Run(); err != nil {
			return fmt.Errorf("keep what the hook wrote: %w", err)
		}
	}
	return nil
}

// run runs the hook on a new container, as the plugin configures it, and
// returns its wall time and its own (status.json's duration_ms).
func (h hookBed) run(ctx context.Context, i int, then func(*container) error) (time.Duration, float64, error) {
	c, err := h.create(i)
	if err != nil {
		return 0, 0, err
	}
	defer c.remove()
	cmd := exec.CommandContext(ctx, h.hook, "hook", "--fail-policy", "fail-closed", "--dynamic-ca-root", h.staging,
		"--processors", strings.Join(h.processors, ","), "--timeout", "5")
	cmd.Stdin = strings.NewReader(`{"ociVersion":"1.3.0","id":"` + c.id + `","status":"creating","pid":1,"bundle":"` + c.bundle + `"}`)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GOMAXPROCS=1"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	began := time.Now()
	err = cmd.Run()
	wall := time.Since(began)
	if err != nil {
		return 0, 0, fmt.Errorf("the hook: %w: %s", err, stderr.String())
	}
	var st struct {
		Result     string  `json:"result"`
		DurationMS float64 `json:"duration_ms"`
	}
	data, err := os.ReadFile(filepath.Join(c.staging, "status.json"))
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err == nil && st.Result != "ok" {
		err = fmt.Errorf("hook result %q", st.Result)
	}
	if err == nil && then != nil {
		err = then(c)
	}
	return wall, st.DurationMS, err
}

// floor runs writefloor on a new container and returns its wall time.
func (h hookBed) floor(ctx context.Context, i int, floorBin, set string) (time.Duration, error) {
	c, err := h.create(i)
	if err != nil {
		return 0, err
	}
	defer c.remove()
	cmd := exec.CommandContext(ctx, floorBin, set, c.rootfs, c.staging)
	cmd.Env = []string{"GOMAXPROCS=1"}
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("writefloor: %w: %s", err, out)
	}
	return time.Since(began), nil
}

// treeSize counts the regular files below dir and their bytes.
func treeSize(dir string) (files int, size int64) {
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if info, ierr := d.Info(); err == nil && ierr == nil && d.Type().IsRegular() {
			files, size = files+1, size+info.Size()
		}
		return nil
	})
	return files, size
}
