package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// Runtime is a container runtime the test bed runs a node of: a release of
// containerd or of CRI-O, built from the Go module proxy, with runc.
type Runtime struct {
	Name    string // as tests name it: containerd-2.4, cri-o-1.34
	Version string // the release built
	CRIO    bool   // CRI-O; else containerd
	// ConfigV2: containerd 1.7 reads config version 2, where the CRI plugin
	// is one section, io.containerd.grpc.v1.cri.
	ConfigV2 bool
	// What the runtime does not do that today's containerd does; the tests
	// expect it not to, and the plugin to cope.
	NoUserNamespaces bool // a pod with hostUsers: false does not start (containerd 1.7 with runc 1.5)
	NoValidator      bool // no NRI validator: required-plugins annotations are not enforced
	NoImageDigest    bool // NRI gives no image config digest: the plugin learns nothing per image
}

// The runtimes the test bed runs, today's containerd first.
var (
	Containerd24 = Runtime{Name: "containerd-2.4", Version: "v2.4.2"}
	Containerd22 = Runtime{Name: "containerd-2.2", Version: "v2.2.9", NoImageDigest: true}
	Containerd17 = Runtime{Name: "containerd-1.7", Version: "v1.7.29", ConfigV2: true, NoValidator: true, NoImageDigest: true}
	CRIO134      = Runtime{Name: "cri-o-1.34", Version: "v1.34.0", CRIO: true, NoValidator: true, NoImageDigest: true}
	Runtimes     = []Runtime{Containerd24, Containerd22, Containerd17, CRIO134}
)

const (
	containerdModule  = "github.com/containerd/containerd/v2"
	ContainerdVersion = "v2.4.2" // Containerd24's, the default node's
	runcModule        = "github.com/opencontainers/runc"
	RuncVersion       = "v1.5.2"
	crioModule        = "github.com/cri-o/cri-o"
)

// Bins locates a node's executables: the runtime's in Dir, and runc, which
// the runtime is given by absolute path.
type Bins struct {
	Runtime                     Runtime
	Dir                         string
	Containerd, Shim, Ctr       string // containerd's
	Crio, Pinns, Conmon, Skopeo string // CRI-O's: its daemon, its namespace pinner, Debian's conmon and skopeo
	Runc                        string
}

// EnsureBinaries returns today's containerd and runc (EnsureRuntime).
func EnsureBinaries(ctx context.Context, log func(string, ...any)) (Bins, error) {
	return EnsureRuntime(ctx, Containerd24, log)
}

// EnsureRuntime returns the runtime's binaries and runc, building them from
// the Go module proxy the first time: containerd 2.x with go install,
// containerd 1.7 from e2e/containerd17, which requires it (its own go.mod
// has exclude directives go install refuses), CRI-O from its module's
// source with cgo (seccomp, and pinns, C), and runc with cgo for its nsexec.
func EnsureRuntime(ctx context.Context, rt Runtime, log func(string, ...any)) (Bins, error) {
	log = logger(log)
	dir, err := cached(cacheKey(rt), func(tmp string) error {
		log("building %s (a few minutes on a cold module cache)", rt.Name)
		switch {
		case rt.CRIO:
			return buildCRIO(ctx, rt, tmp)
		case rt.ConfigV2:
			module, err := sourceDir("containerd17")
			if err != nil {
				return err
			}
			return goBuildTools(ctx, module, tmp)
		}
		return goInstall(ctx, tmp, false,
			containerdModule+"/cmd/containerd@"+rt.Version,
			containerdModule+"/cmd/containerd-shim-runc-v2@"+rt.Version,
			containerdModule+"/cmd/ctr@"+rt.Version)
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
	b := Bins{Runtime: rt, Dir: dir, Runc: filepath.Join(runcDir, "runc")}
	need := []string{b.Runc}
	if rt.CRIO {
		b.Crio, b.Pinns = filepath.Join(dir, "crio"), filepath.Join(dir, "pinns")
		if b.Conmon, err = lookTool("conmon"); err == nil {
			b.Skopeo, err = lookTool("skopeo")
		}
		if err != nil {
			return Bins{}, fmt.Errorf("%s needs Debian's conmon and skopeo (make deps installs them): %w", rt.Name, err)
		}
		need = append(need, b.Crio, b.Pinns)
	} else {
		b.Containerd, b.Shim, b.Ctr = filepath.Join(dir, "containerd"), filepath.Join(dir, "containerd-shim-runc-v2"), filepath.Join(dir, "ctr")
		need = append(need, b.Containerd, b.Shim, b.Ctr)
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return Bins{}, fmt.Errorf("cached binary missing (delete its cache entry to rebuild): %w", err)
		}
	}
	return b, nil
}

// cacheKey names a runtime's build; containerd 2.4's keeps the name the
// test bed's cache has always had for it.
func cacheKey(rt Runtime) string {
	switch {
	case rt.CRIO:
		return "cri-o-" + rt.Version
	case rt.ConfigV2:
		module, err := sourceDir("containerd17")
		if err == nil {
			if hash, err := hashDir(module, ""); err == nil {
				return "containerd-" + rt.Version + "-" + hash[:12]
			}
		}
	}
	return "containerd-" + rt.Version
}

// goBuildTools builds every tool of the module at dir into out.
func goBuildTools(ctx context.Context, dir, out string) error {
	cmd, err := goCommand(ctx, "build", "-trimpath", "-o", out+"/", "tool")
	if err != nil {
		return err
	}
	cmd.Dir = dir
	cmd.Env = withEnv("CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	return run(cmd)
}

// buildCRIO builds crio and pinns into out from CRI-O's module source: the
// module proxy serves the module, not its version list, so go install
// refuses it; a copy of the downloaded module builds. crio needs cgo and
// Debian's libseccomp-dev; pinns is C, built with its Makefile.
func buildCRIO(ctx context.Context, rt Runtime, out string) error {
	dl, err := goCommand(ctx, "mod", "download", "-json", crioModule+"@"+rt.Version)
	if err != nil {
		return err
	}
	dl.Dir, dl.Env = out, withEnv("GOWORK=off", "GOFLAGS=-mod=mod")
	data, err := dl.Output()
	if err != nil {
		return fmt.Errorf("download %s@%s: %w", crioModule, rt.Version, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(data, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("download %s@%s: no directory in %s", crioModule, rt.Version, data)
	}
	src := filepath.Join(out, "src")
	if err := run(command(ctx, "cp", "-r", mod.Dir, src)); err != nil {
		return err
	}
	if err := run(command(ctx, "chmod", "-R", "u+w", src)); err != nil {
		return err
	}
	build, err := goCommand(ctx, "build", "-trimpath", "-tags",
		"containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper seccomp",
		"-o", filepath.Join(out, "crio"), "./cmd/crio")
	if err != nil {
		return err
	}
	build.Dir = src
	build.Env = withEnv("CGO_ENABLED=1", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if err := run(build); err != nil {
		return err
	}
	pinns := command(ctx, "make", "-C", filepath.Join(src, "pinns"))
	if err := run(pinns); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(src, "bin", "pinns"), filepath.Join(out, "pinns")); err != nil {
		return fmt.Errorf("pinns: %w", err)
	}
	return removeTree(src)
}

// sourceDir finds e2e/NAME next to this package's source. The test bed only
// runs from a source checkout, where this file's compile-time path is valid.
func sourceDir(name string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the test bed source")
	}
	dir := filepath.Join(filepath.Dir(file), "..", name)
	if !isDir(dir) {
		return "", fmt.Errorf("e2e/%s not found at %s (built with -trimpath?)", name, dir)
	}
	return dir, nil
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
