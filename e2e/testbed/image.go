package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

const (
	// Bump a recipe version whenever the way an image is built changes, so cached images
	// built the old way are not reused.
	debianRecipe = "debian-v2"
	pauseRecipe  = "pause-v1"

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
}

// DebianTestImage is the default image for tests: curl and Python (requests) clients
// using the system trust store.
func DebianTestImage() ImageSpec {
	return ImageSpec{
		Name:     "debian",
		Suite:    "bookworm",
		Packages: []string{"ca-certificates", "curl", "python3", "python3-requests"},
	}
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
	hash := contentKey([]byte(debianRecipe), []byte(spec.Name), []byte(spec.Suite),
		[]byte(strings.Join(pkgs, ",")), pub.CertPEM)[:12]
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
	if err := inChroot(ctx, rootfs, "apt-get", "clean"); err != nil {
		return err
	}
	bundle, err := trustPublicCA(ctx, rootfs, pub)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-certificates.crt"), bundle, 0o644); err != nil {
		return fmt.Errorf("save original bundle: %w", err)
	}
	err = writeOCIArchive(ctx, rootfs, filepath.Join(dir, "image.tar"), ref,
		imageConfig{Env: []string{"PATH=" + standardPath}, Cmd: []string{"/bin/sh"}})
	if err != nil {
		return err
	}
	// Only the archive is cached; the 300 MB rootfs would just be dead weight.
	return removeTree(rootfs)
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
// in e2e/cmd/pause, cached by the hash of its source and the Go version.
func BuildPauseImage(ctx context.Context, log func(string, ...any)) (*Image, error) {
	log = logger(log)
	src, err := pauseSourceDir()
	if err != nil {
		return nil, err
	}
	srcHash, err := hashDir(src, ".go")
	if err != nil {
		return nil, err
	}
	hash := contentKey([]byte(pauseRecipe), []byte(runtime.Version()), []byte(srcHash))[:12]
	ref := imageRepo + "pause:" + hash
	dir, err := cached("image-pause-"+hash, func(tmp string) error {
		log("building pause image %s", ref)
		return buildPause(ctx, tmp, src, ref)
	})
	if err != nil {
		return nil, err
	}
	return &Image{Ref: ref, Archive: filepath.Join(dir, "image.tar")}, nil
}

// pauseSourceDir finds e2e/cmd/pause next to this package's source. The test bed only
// runs from a source checkout, where this file's compile-time path is valid.
func pauseSourceDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the test bed source")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "cmd", "pause")
	if !isDir(dir) {
		return "", fmt.Errorf("pause source not found at %s (built with -trimpath?)", dir)
	}
	return dir, nil
}

func buildPause(ctx context.Context, dir, src, ref string) error {
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return fmt.Errorf("create pause rootfs: %w", err)
	}
	cmd, err := goCommand(ctx, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w",
		"-o", filepath.Join(rootfs, "pause"), ".")
	if err != nil {
		return err
	}
	cmd.Dir = src
	cmd.Env = withEnv("CGO_ENABLED=0")
	if err := run(cmd); err != nil {
		return err
	}
	err = writeOCIArchive(ctx, rootfs, filepath.Join(dir, "image.tar"), ref,
		imageConfig{Entrypoint: []string{"/pause"}})
	if err != nil {
		return err
	}
	return os.RemoveAll(rootfs)
}
