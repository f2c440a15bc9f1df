package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

const (
	containerdModule  = "github.com/containerd/containerd/v2"
	ContainerdVersion = "v2.4.2"
	runcModule        = "github.com/opencontainers/runc"
	RuncVersion       = "v1.5.2"
)

// Bins locates the node's executables. Dir holds containerd, its shim and ctr; runc may
// live elsewhere and is passed to containerd by absolute path.
type Bins struct{ Dir, Containerd, Shim, Ctr, Runc string }

// EnsureBinaries returns containerd v2.4.2 and runc v1.5.2, building them from the Go
// module proxy the first time. containerd is built with cgo off; runc needs cgo for its
// nsexec C code.
func EnsureBinaries(ctx context.Context, log func(string, ...any)) (Bins, error) {
	log = logger(log)
	cdDir, err := cached("containerd-"+ContainerdVersion, func(tmp string) error {
		log("building containerd %s (a few minutes on a cold module cache)", ContainerdVersion)
		return goInstall(ctx, tmp, false,
			containerdModule+"/cmd/containerd@"+ContainerdVersion,
			containerdModule+"/cmd/containerd-shim-runc-v2@"+ContainerdVersion,
			containerdModule+"/cmd/ctr@"+ContainerdVersion)
	})
	if err != nil {
		return Bins{}, err
	}
	runcDir, err := cached("runc-"+RuncVersion, func(tmp string) error {
		log("building runc %s", RuncVersion)
		return goInstall(ctx, tmp, true, runcModule+"@"+RuncVersion)
	})
	if err != nil {
		return Bins{}, err
	}
	b := Bins{
		Dir:        cdDir,
		Containerd: filepath.Join(cdDir, "containerd"),
		Shim:       filepath.Join(cdDir, "containerd-shim-runc-v2"),
		Ctr:        filepath.Join(cdDir, "ctr"),
		Runc:       filepath.Join(runcDir, "runc"),
	}
	for _, p := range []string{b.Containerd, b.Shim, b.Ctr, b.Runc} {
		if _, err := os.Stat(p); err != nil {
			return Bins{}, fmt.Errorf("cached binary missing (delete its cache entry to rebuild): %w", err)
		}
	}
	return b, nil
}

// goInstall installs pkgs (each path@version, after any build flags) into dir.
func goInstall(ctx context.Context, dir string, cgo bool, pkgs ...string) error {
	cgoEnabled := "CGO_ENABLED=0"
	if cgo {
		cgoEnabled = "CGO_ENABLED=1"
	}
	cmd, err := goCommand(ctx, append([]string{"install"}, pkgs...)...)
	if err != nil {
		return err
	}
	// Run outside any module so path@version installs are not affected by a go.work.
	cmd.Dir = dir
	cmd.Env = withEnv("GOBIN="+dir, cgoEnabled, "GOWORK=off", "GOFLAGS=-buildvcs=false")
	return run(cmd)
}
