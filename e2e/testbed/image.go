package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cainjekt/cainjekt/e2e/oci"
	"golang.org/x/sys/unix"
)

const (
	// Bump a recipe version whenever the way an image is built changes, so cached images
	// built the old way are not reused.
	debianRecipe = "debian-v3"
	filesRecipe  = "files-v1"
	goRecipe     = "go-v1"

	imageRepo = "localhost/cainjekt-e2e/"

	// publicCAFile is where the public CA sits in every Debian test image, as a site admin
	// would add a corporate CA.
	publicCAFile = "usr/local/share/ca-certificates/cainjekt-e2e-public-ca.crt"
	bundleFile   = "etc/ssl/certs/ca-certificates.crt"
)

// ImageSpec describes a Debian test image.
type ImageSpec struct {
	Name     string   // repository name under localhost/cainjekt-e2e/
	Suite    string   // Debian suite, e.g. bookworm
	Packages []string // installed with debootstrap --include
	Files    []File   // written into the rootfs after debootstrap
	Env      []string // the image config's environment; PATH defaults to the standard one
	// Setup commands run in a chroot (with /proc mounted) after Files are
	// written and before the public CA is trusted.
	Setup [][]string
}

// File is a file of an image, a symlink if Link is set, or a FIFO if Mode
// says os.ModeNamedPipe.
type File struct {
	Path   string // absolute, inside the image
	Mode   os.FileMode
	Data   []byte
	Link   string
	Xattrs map[string]string // extended attributes of a regular file
}

// key identifies the files for a cache key.
func filesKey(files []File) []byte {
	var parts [][]byte
	for _, f := range files {
		parts = append(parts, []byte(f.Path), []byte(f.Mode.String()), f.Data, []byte(f.Link))
		for _, name := range slices.Sorted(maps.Keys(f.Xattrs)) {
			parts = append(parts, []byte(name), []byte(f.Xattrs[name]))
		}
	}
	return []byte(contentKey(parts...))
}

// writeFiles writes files into rootfs, creating their directories.
func writeFiles(rootfs string, files []File) error {
	for _, f := range files {
		p := filepath.Join(rootfs, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("image file %s: %w", f.Path, err)
		}
		if f.Link != "" {
			if err := os.Symlink(f.Link, p); err != nil {
				return fmt.Errorf("image symlink %s: %w", f.Path, err)
			}
			continue
		}
		if f.Mode&os.ModeNamedPipe != 0 {
			if err := unix.Mkfifo(p, uint32(f.Mode.Perm())); err != nil {
				return fmt.Errorf("image FIFO %s: %w", f.Path, err)
			}
			continue
		}
		if err := os.WriteFile(p, f.Data, f.Mode); err != nil {
			return fmt.Errorf("image file %s: %w", f.Path, err)
		}
		if err := os.Chmod(p, f.Mode); err != nil { // WriteFile's mode passes the umask
			return fmt.Errorf("image file %s: %w", f.Path, err)
		}
		for name, value := range f.Xattrs {
			if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
				return fmt.Errorf("image file %s: set %s: %w", f.Path, name, err)
			}
		}
	}
	return nil
}

// Image is a locally built image ready to import into a node.
type Image struct {
	Ref            string // e.g. localhost/cainjekt-e2e/debian:<hash12>
	Archive        string // OCI-layout tar in the cache
	OriginalBundle []byte // /etc/ssl/certs/ca-certificates.crt as built (nil for pause)
}

// BuildDebianImage builds (or takes from the cache) a debootstrapped Debian image whose
// original trust store also holds PublicCA, so tests can prove that injection keeps what
// the image already trusted.
func BuildDebianImage(ctx context.Context, spec ImageSpec, log func(string, ...any)) (*Image, error) {
	log = logger(log)
	if spec.Name == "" || spec.Suite == "" {
		return nil, errors.New("image spec needs a Name and a Suite")
	}
	if _, err := lookTool("debootstrap"); err != nil {
		return nil, errors.New("debootstrap is not installed: run `make deps`")
	}
	pub, err := PublicCA()
	if err != nil {
		return nil, err
	}
	pkgs := slices.Sorted(slices.Values(spec.Packages))
	var setup []string
	for _, c := range spec.Setup {
		setup = append(setup, strings.Join(c, "\x00"))
	}
	hash := contentKey([]byte(debianRecipe), []byte(spec.Name), []byte(spec.Suite),
		[]byte(strings.Join(pkgs, ",")), pub.CertPEM, filesKey(spec.Files), []byte(strings.Join(setup, "\n")),
		[]byte(strings.Join(spec.Env, "\n")))[:12]
	ref := imageRepo + spec.Name + ":" + hash
	dir, err := cached("image-"+spec.Name+"-"+hash, func(tmp string) error {
		return buildDebian(ctx, tmp, spec, pub, ref, log)
	})
	if err != nil {
		return nil, err
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "ca-certificates.crt"))
	if err != nil {
		return nil, fmt.Errorf("read original bundle of %s: %w", ref, err)
	}
	return &Image{Ref: ref, Archive: filepath.Join(dir, "image.tar"), OriginalBundle: bundle}, nil
}

func buildDebian(ctx context.Context, dir string, spec ImageSpec, pub *CA, ref string, log func(string, ...any)) error {
	mirror, err := DebianMirror(spec.Suite)
	if err != nil {
		return err
	}
	rootfs := filepath.Join(dir, "rootfs")
	log("debootstrap %s from %s into %s (about a minute)", spec.Suite, mirror, rootfs)
	start := time.Now()
	args := []string{"--variant=minbase"}
	if len(spec.Packages) > 0 {
		args = append(args, "--include="+strings.Join(spec.Packages, ","))
	}
	cmd := command(ctx, "debootstrap", append(args, spec.Suite, rootfs, mirror)...)
	cmd.Env = withEnv("PATH="+standardPath, "LC_ALL=C")
	if err := run(cmd); err != nil {
		return err
	}
	log("debootstrap done in %s", time.Since(start).Round(time.Second))
	// debootstrap leaves the downloaded packages behind; they would only bloat the layer
	// and slow every import down.
	if err := writeFiles(rootfs, spec.Files); err != nil {
		return err
	}
	bundle, err := withProc(rootfs, func() ([]byte, error) {
		for _, c := range spec.Setup {
			if err := inChroot(ctx, rootfs, c...); err != nil {
				return nil, err
			}
		}
		if err := inChroot(ctx, rootfs, "apt-get", "clean"); err != nil {
			return nil, err
		}
		return trustPublicCA(ctx, rootfs, pub)
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-certificates.crt"), bundle, 0o644); err != nil {
		return fmt.Errorf("save original bundle: %w", err)
	}
	env := spec.Env
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		env = append([]string{"PATH=" + standardPath}, env...)
	}
	err = writeOCIArchive(ctx, rootfs, filepath.Join(dir, "image.tar"), ref, imageConfig{Env: env, Cmd: []string{"/bin/sh"}})
	if err != nil {
		return err
	}
	// Only the archive is cached; the 300 MB rootfs would just be dead weight.
	return removeTree(rootfs)
}

// withProc runs f with /proc mounted in rootfs: a JVM, which setup steps and
// ca-certificates-java's update hook run, needs it.
func withProc(rootfs string, f func() ([]byte, error)) ([]byte, error) {
	proc := filepath.Join(rootfs, "proc")
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount proc in %s: %w", rootfs, err)
	}
	out, err := f()
	if uerr := unix.Unmount(proc, unix.MNT_DETACH); uerr != nil && err == nil {
		err = fmt.Errorf("unmount %s: %w", proc, uerr)
	}
	return out, err
}

// trustPublicCA adds pub to the image's original trust store the Debian way and returns
// the resulting bundle.
func trustPublicCA(ctx context.Context, rootfs string, pub *CA) ([]byte, error) {
	if err := os.WriteFile(filepath.Join(rootfs, publicCAFile), pub.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("add public CA to image: %w", err)
	}
	if err := inChroot(ctx, rootfs, "update-ca-certificates"); err != nil {
		return nil, err
	}
	bundle, err := os.ReadFile(filepath.Join(rootfs, bundleFile))
	if err != nil {
		return nil, fmt.Errorf("read image bundle: %w", err)
	}
	if !bytes.Contains(bundle, bytes.TrimSpace(pub.CertPEM)) {
		return nil, errors.New("update-ca-certificates did not add the public CA to the image bundle")
	}
	return bundle, nil
}

// inChroot runs a command inside rootfs with a minimal, predictable environment.
func inChroot(ctx context.Context, rootfs string, args ...string) error {
	cmd := command(ctx, "chroot", append([]string{rootfs}, args...)...)
	cmd.Env = []string{"PATH=" + standardPath, "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"}
	return run(cmd)
}

// BuildPauseImage builds (or takes from the cache) the sandbox image: the static program
// in e2e/cmd/pause.
func BuildPauseImage(ctx context.Context, log func(string, ...any)) (*Image, error) {
	pause, err := GoProgram(ctx, "pause", log)
	if err != nil {
		return nil, err
	}
	return BuildFilesImage(ctx, "pause", []File{{Path: "/pause", Mode: 0o755, Data: pause}},
		ImageConfig{Entrypoint: []string{"/pause"}}, log)
}

// ImageConfig is the runtime part of an image's config.
type ImageConfig = imageConfig

// BuildFilesImage builds (or takes from the cache) an image made of nothing but files: a
// scratch or distroless-style image, with no shell and no package manager.
func BuildFilesImage(ctx context.Context, name string, files []File, cfg ImageConfig, log func(string, ...any)) (*Image, error) {
	log = logger(log)
	cfgKey, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	hash := contentKey([]byte(filesRecipe), []byte(name), filesKey(files), cfgKey)[:12]
	ref := imageRepo + name + ":" + hash
	dir, err := cached("image-"+name+"-"+hash, func(tmp string) error {
		log("building image %s", ref)
		rootfs := filepath.Join(tmp, "rootfs")
		if err := os.Mkdir(rootfs, 0o755); err != nil {
			return fmt.Errorf("create rootfs: %w", err)
		}
		if err := writeFiles(rootfs, files); err != nil {
			return err
		}
		if err := writeOCIArchive(ctx, rootfs, filepath.Join(tmp, "image.tar"), ref, cfg); err != nil {
			return err
		}
		return os.RemoveAll(rootfs)
	})
	if err != nil {
		return nil, err
	}
	return &Image{Ref: ref, Archive: filepath.Join(dir, "image.tar")}, nil
}

// GoProgram builds (or takes from the cache) the static program e2e/cmd/NAME and returns
// it, cached by the hash of its source and the Go version.
func GoProgram(ctx context.Context, name string, log func(string, ...any)) ([]byte, error) {
	log = logger(log)
	src, err := sourceDir(filepath.Join("cmd", name))
	if err != nil {
		return nil, err
	}
	srcHash, err := hashDir(src, ".go")
	if err != nil {
		return nil, err
	}
	hash := contentKey([]byte(goRecipe), []byte(name), []byte(runtime.Version()), []byte(srcHash))[:12]
	dir, err := cached("go-"+name+"-"+hash, func(tmp string) error {
		log("building %s", name)
		cmd, err := goCommand(ctx, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w",
			"-o", filepath.Join(tmp, name), ".")
		if err != nil {
			return err
		}
		cmd.Dir = src
		cmd.Env = withEnv("CGO_ENABLED=0")
		return run(cmd)
	})
	if err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, name))
}

// ImageRootfs extracts an image's root filesystem (its one layer) into the cache, once,
// and returns the directory: what a container of it starts from, for benchmarks that run
// the hook outside a node.
func ImageRootfs(ctx context.Context, img *Image) (string, error) {
	key := "rootfs-" + filepath.Base(filepath.Dir(img.Archive))
	dir, err := cached(key, func(tmp string) error {
		layout := filepath.Join(tmp, "layout")
		if err := os.Mkdir(layout, 0o755); err != nil {
			return err
		}
		if err := run(command(ctx, "tar", "-xf", img.Archive, "-C", layout)); err != nil {
			return err
		}
		layer, err := onlyLayer(layout)
		if err != nil {
			return err
		}
		rootfs := filepath.Join(tmp, "rootfs")
		if err := os.Mkdir(rootfs, 0o755); err != nil {
			return err
		}
		if err := run(command(ctx, "tar", "-xf", layer, "-C", rootfs, "--numeric-owner", "--xattrs", "--xattrs-include=*")); err != nil {
			return err
		}
		return os.RemoveAll(layout)
	})
	return filepath.Join(dir, "rootfs"), err
}

// onlyLayer finds the one layer of the image in an OCI layout.
func onlyLayer(layout string) (string, error) {
	var index, manifest struct {
		Manifests []oci.Descriptor `json:"manifests"`
		Layers    []oci.Descriptor `json:"layers"`
	}
	blob := func(d oci.Descriptor) string {
		return filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(d.Digest, "sha256:"))
	}
	data, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err == nil {
		err = json.Unmarshal(data, &index)
	}
	if err == nil && len(index.Manifests) == 1 {
		if data, err = os.ReadFile(blob(index.Manifests[0])); err == nil {
			err = json.Unmarshal(data, &manifest)
		}
	}
	if err != nil || len(manifest.Layers) != 1 {
		return "", fmt.Errorf("image layout %s: want one manifest of one layer: %v", layout, err)
	}
	return blob(manifest.Layers[0]), nil
}
