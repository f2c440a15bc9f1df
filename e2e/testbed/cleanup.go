package testbed

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type mount struct{ point, fsType string }

// readMounts lists this process's mounts in /proc/self/mountinfo order (parents before
// the mounts stacked on or below them).
func readMounts() ([]mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var mounts []mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// "id parent major:minor root mountpoint options [optional...] - fstype source super"
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mounts = append(mounts, mount{point: unescapeMount(fields[4]), fsType: fields[sep+1]})
	}
	return mounts, nil
}

// unescapeMount decodes the octal escapes (\040 for a space, ...) mountinfo uses.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// mountsUnder returns the mount points at or below dir, in mountinfo order.
func mountsUnder(dir string) ([]string, error) {
	mounts, err := readMounts()
	if err != nil {
		return nil, err
	}
	var points []string
	for _, m := range mounts {
		if within(m.point, dir) {
			points = append(points, m.point)
		}
	}
	return points, nil
}

// unmountAll unmounts everything at or below dir, deepest and most recent first, lazily
// when a mount is still busy. It succeeds only once no such mount remains.
func unmountAll(dir string) error {
	for range 10 {
		points, err := mountsUnder(dir)
		if err != nil || len(points) == 0 {
			return err
		}
		slices.Reverse(points)
		slices.SortStableFunc(points, func(a, b string) int {
			return strings.Count(b, "/") - strings.Count(a, "/")
		})
		for _, p := range points {
			err := unix.Unmount(p, 0)
			if errors.Is(err, unix.EBUSY) {
				err = unix.Unmount(p, unix.MNT_DETACH)
			}
			// EINVAL: no longer a mount point (an earlier lazy unmount took it along).
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	points, err := mountsUnder(dir)
	if err == nil && len(points) > 0 {
		err = fmt.Errorf("mounts remain under %s: %v", dir, points)
	}
	return err
}

// removeTree deletes dir after unmounting everything below it; os.RemoveAll would
// otherwise descend into (and empty) whatever is mounted there.
func removeTree(dir string) error {
	if err := unmountAll(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// procsMentioning returns the live processes, other than this one, whose command line
// contains path (containerd and its shims carry the node's socket paths in theirs).
// Zombies have an empty command line, so they never match.
func procsMentioning(path string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	needle := []byte(path)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, needle) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// cgroupRoots returns the mount point of every cgroup hierarchy: each v1 controller
// hierarchy and, on hybrid or unified hosts, the v2 one.
func cgroupRoots() ([]string, error) {
	mounts, err := readMounts()
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, m := range mounts {
		if (m.fsType == "cgroup" || m.fsType == "cgroup2") && !slices.Contains(roots, m.point) {
			roots = append(roots, m.point)
		}
	}
	return roots, nil
}

// cgroupDirs lists the cgroup directories at and below parent in every hierarchy,
// parents before children.
func cgroupDirs(parent string) ([]string, error) {
	// Walking (and later killing and removing) from a hierarchy's root would take the
	// whole machine down with the node.
	if strings.Trim(parent, "/") == "" {
		return nil, fmt.Errorf("refusing to manage cgroup parent %q", parent)
	}
	roots, err := cgroupRoots()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, root := range roots {
		err := filepath.WalkDir(filepath.Join(root, parent), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("walk cgroups: %w", err)
		}
	}
	return dirs, nil
}

// cgroupProcs returns the processes in any cgroup at or below parent.
func cgroupProcs(parent string) ([]int, error) {
	dirs, err := cgroupDirs(parent)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			continue // removed meanwhile
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// removeCgroups removes parent and every cgroup below it in every hierarchy, children
// first. A cgroup whose last task just died can stay busy briefly, so it retries.
func removeCgroups(parent string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		dirs, err := cgroupDirs(parent)
		if err != nil || len(dirs) == 0 {
			return err
		}
		slices.Reverse(dirs)
		var busy error
		for _, dir := range dirs {
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				busy = fmt.Errorf("remove cgroup %s: %w", dir, err)
			}
		}
		if busy == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return busy
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killUntilGone SIGKILLs whatever list returns until it returns nothing or time runs out.
func killUntilGone(list func() ([]int, error), timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := list()
		if err != nil || len(pids) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes survive SIGKILL: %v", pids)
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
