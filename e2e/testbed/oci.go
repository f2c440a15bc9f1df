package testbed

import (
	"context"
	"os"
	"runtime"
	"strings"

	"github.com/cainjekt/cainjekt/e2e/oci"
)

// imageConfig is the runtime part of an OCI image config.
type imageConfig struct {
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
}

// writeOCIArchive packs rootfs as a single-layer image into an OCI-layout tar at out. The
// manifest is annotated with ref so `ctr images import` names the image ref.
func writeOCIArchive(ctx context.Context, rootfs, out, ref string, cfg imageConfig) error {
	layerPath := out + ".layer"
	defer os.Remove(layerPath)
	if err := tarRootfs(ctx, rootfs, layerPath); err != nil {
		return err
	}
	layer, err := oci.FileBlob(layerPath, oci.MediaTypeLayer)
	if err != nil {
		return err
	}
	config, err := oci.JSONBlob(oci.MediaTypeConfig, map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layer.Digest}},
	})
	if err != nil {
		return err
	}
	manifest, err := oci.JSONBlob(oci.MediaTypeManifest, map[string]any{
		"schemaVersion": 2,
		"mediaType":     oci.MediaTypeManifest,
		"config":        config.Descriptor,
		"layers":        []oci.Descriptor{layer.Descriptor},
	})
	if err != nil {
		return err
	}
	desc := manifest.Descriptor
	desc.Platform = &oci.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	desc.Annotations = map[string]string{
		oci.AnnotationImageName: ref,
		oci.AnnotationRefName:   ref[strings.LastIndex(ref, ":")+1:],
	}
	index, err := oci.Index([]oci.Descriptor{desc})
	if err != nil {
		return err
	}
	return oci.WriteArchive(out, index, []oci.Blob{config, manifest, layer})
}

// tarRootfs writes rootfs as an uncompressed layer with GNU tar, which handles hard links,
// device nodes, numeric owners and extended attributes (of every namespace: an image's
// security.selinux labels too) faithfully. The contents of /dev, /proc and /sys belong
// to the runtime, so only the directories themselves are kept.
func tarRootfs(ctx context.Context, rootfs, out string) error {
	cmd := command(ctx, "tar", "--create", "--file", out, "--numeric-owner", "--sort=name",
		"--xattrs", "--xattrs-include=*",
		"--anchored", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
		"--directory", rootfs, ".")
	return run(cmd)
}
