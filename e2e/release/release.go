// Package release builds cainjekt's release image without a Docker engine:
// the two static binaries of the Dockerfile's final stage, for linux/amd64
// and linux/arm64, in one multi-platform OCI index, written as an OCI image
// layout archive that `ctr images import` loads and registry clients push.
// The same sources, version and Go toolchain give the same digests.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cainjekt/cainjekt/e2e/oci"
)

// The image's files and command, as the Dockerfile's final stage has them
// (TestDockerfileDescribesTheImage holds the two together).
var (
	Files      = []string{"/cainjekt", "/cainjekt-hook"}
	Entrypoint = []string{"/cainjekt"}
	Cmd        = []string{"plugin"}
)

// binary is how each file of the image is built: `make build`'s flags.
type binary struct {
	name    string
	tags    string
	gcflags string // "" for the defaults
}

var binaries = []binary{
	// The plugin speaks HTTP/1.1 only (net/http's bundled HTTP/2 left out),
	// and is built without inlining, as make build builds it.
	{"cainjekt", "nethttpomithttp2", "all=-l"},
	// The hook and the wrapper alone, which runc starts for every injected container.
	{"cainjekt-hook", "hookonly", ""},
}

// buildArgs are the go build arguments of b, between the tags and the
// output: what the Dockerfile writes too.
func (b binary) buildArgs() []string {
	if b.gcflags == "" {
		return nil
	}
	return []string{"-gcflags", b.gcflags}
}

// Platform is a platform of the image.
type Platform struct {
	Arch    string // GOARCH and OCI architecture
	Variant string // OCI variant
	Machine elf.Machine
}

func (p Platform) String() string { return "linux/" + p.Arch }

// Platforms are the platforms the image is built for.
var Platforms = []Platform{
	{Arch: "amd64", Machine: elf.EM_X86_64},
	{Arch: "arm64", Variant: "v8", Machine: elf.EM_AARCH64},
}

// Options say what to build.
type Options struct {
	Src     string // the repository's root: the product module
	Version string // cainjekt's version, in the binaries
	Ref     string // the image's name, e.g. ghcr.io/cainjekt/cainjekt:v0.1.0
	Out     string // the archive to write
	Log     func(format string, args ...any)
}

// Image is what Build wrote.
type Image struct {
	Ref, Archive string
	Index        string            // the multi-platform index's digest
	Manifests    map[string]string // platform -> its manifest's digest
}

// Build builds each platform's binaries, checks they are static
// executables of its machine, and writes the image. It needs Go and
// nothing else, on any machine Go runs on: it runs none of what it built
// (TestImageBinariesRun does, under qemu-user for the other architecture).
func Build(ctx context.Context, opts Options) (*Image, error) {
	if opts.Src == "" || opts.Version == "" || opts.Ref == "" || opts.Out == "" {
		return nil, errors.New("release: Src, Version, Ref and Out are all needed")
	}
	if !strings.Contains(opts.Ref[strings.LastIndex(opts.Ref, "/")+1:], ":") {
		return nil, fmt.Errorf("release: image %q needs a tag", opts.Ref)
	}
	log := opts.Log
	if log == nil {
		log = func(string, ...any) {}
	}
	work, err := os.MkdirTemp("", "cainjekt-image-")
	if err != nil {
		return nil, fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(work)

	img := &Image{Ref: opts.Ref, Archive: opts.Out, Manifests: map[string]string{}}
	var blobs []oci.Blob
	var manifests []oci.Descriptor
	for _, p := range Platforms {
		dir := filepath.Join(work, p.Arch)
		start := time.Now()
		if err := buildBinaries(ctx, opts.Src, dir, p, opts.Version); err != nil {
			return nil, err
		}
		for _, b := range binaries {
			if err := checkELF(filepath.Join(dir, b.name), p.Machine); err != nil {
				return nil, err
			}
		}
		log("%s: built and checked in %s", p, time.Since(start).Round(100*time.Millisecond))
		manifest, platformBlobs, err := platformImage(dir, p)
		if err != nil {
			return nil, err
		}
		img.Manifests[p.String()] = manifest.Digest
		manifests = append(manifests, manifest)
		blobs = append(blobs, platformBlobs...)
	}
	indexData, err := oci.Index(manifests)
	if err != nil {
		return nil, err
	}
	index := oci.DataBlob(oci.MediaTypeIndex, indexData)
	img.Index = index.Digest
	blobs = append(blobs, index)

	// The layout's own index.json names the image: containerd by the full
	// reference, skopeo and friends by the tag.
	named := index.Descriptor
	named.Annotations = map[string]string{
		oci.AnnotationImageName: opts.Ref,
		oci.AnnotationRefName:   opts.Ref[strings.LastIndex(opts.Ref, ":")+1:],
	}
	layoutIndex, err := oci.Index([]oci.Descriptor{named})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(opts.Out), 0o755); err != nil {
		return nil, fmt.Errorf("create output dir: %w", err)
	}
	if err := oci.WriteArchive(opts.Out, layoutIndex, blobs); err != nil {
		return nil, err
	}
	return img, nil
}

// buildBinaries builds the image's binaries for p into dir, static and
// C-free, without VCS stamping: a build from a clean tree and one from a
// tarball of it give the same bytes. GOFLAGS is the release's, not the
// caller's; go builds from vendor/ by itself where the module has one (an
// air-gapped build), from the module cache otherwise.
func buildBinaries(ctx context.Context, src, dir string, p Platform, version string) error {
	for _, b := range binaries {
		args := append([]string{"build", "-trimpath", "-buildvcs=false", "-tags", b.tags}, b.buildArgs()...)
		args = append(args, "-ldflags", "-s -w -X main.version="+version, "-o", filepath.Join(dir, b.name), ".")
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+p.Arch, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s for %s: %w\n%s", b.name, p, err, out)
		}
	}
	return nil
}

// checkELF makes sure path is an executable for machine that needs no
// dynamic loader and no shared library: the image has neither.
func checkELF(path string, machine elf.Machine) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			return fmt.Errorf("%s is dynamically linked (%v)", path, prog.Type)
		}
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != machine || f.Type != elf.ET_EXEC {
		return fmt.Errorf("%s is %v %v %v, want a 64-bit %v executable", path, f.Class, f.Machine, f.Type, machine)
	}
	return nil
}

// platformImage makes p's layer, config and manifest from the binaries in dir.
func platformImage(dir string, p Platform) (oci.Descriptor, []oci.Blob, error) {
	layerTar, err := layer(dir)
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz) // no name, no timestamp in the header
	if _, err := zw.Write(layerTar); err != nil {
		return oci.Descriptor{}, nil, fmt.Errorf("compress layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return oci.Descriptor{}, nil, fmt.Errorf("compress layer: %w", err)
	}
	diffID := oci.DataBlob(oci.MediaTypeLayer, layerTar).Digest
	layerBlob := oci.DataBlob(oci.MediaTypeLayerGzip, gz.Bytes())
	config, err := oci.JSONBlob(oci.MediaTypeConfig, map[string]any{
		"architecture": p.Arch,
		"variant":      p.Variant,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": Entrypoint, "Cmd": Cmd},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	manifest, err := oci.JSONBlob(oci.MediaTypeManifest, map[string]any{
		"schemaVersion": 2,
		"mediaType":     oci.MediaTypeManifest,
		"config":        config.Descriptor,
		"layers":        []oci.Descriptor{layerBlob.Descriptor},
	})
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	desc := manifest.Descriptor
	desc.Platform = &oci.Platform{Architecture: p.Arch, OS: "linux", Variant: p.Variant}
	return desc, []oci.Blob{layerBlob, config, manifest}, nil
}

// layer is the image's one layer: Files, owned by root, mode 0755, dated
// at the epoch, as a Dockerfile COPY of the build stage's binaries lays
// them out.
func layer(dir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, file := range Files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.Base(file)))
		if err != nil {
			return nil, fmt.Errorf("read binary: %w", err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(file, "/"), Mode: 0o755,
			Size: int64(len(data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write layer: %w", err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("write layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write layer: %w", err)
	}
	return buf.Bytes(), nil
}
