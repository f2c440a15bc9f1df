package testbed

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// imageConfig is the runtime part of an OCI image config.
type imageConfig struct {
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// blob is a content-addressed file of the OCI layout: in memory, or streamed from path.
type blob struct {
	descriptor
	data []byte
	path string
}

// writeOCIArchive packs rootfs as a single-layer image into an OCI-layout tar at out. The
// manifest is annotated with ref so `ctr images import` names the image ref.
func writeOCIArchive(ctx context.Context, rootfs, out, ref string, cfg imageConfig) error {
	layerPath := out + ".layer"
	defer os.Remove(layerPath)
	if err := tarRootfs(ctx, rootfs, layerPath); err != nil {
		return err
	}
	layer, err := fileBlob(layerPath, mediaTypeLayer)
	if err != nil {
		return err
	}
	config, err := jsonBlob(mediaTypeConfig, map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layer.Digest}},
	})
	if err != nil {
		return err
	}
	manifest, err := jsonBlob(mediaTypeManifest, map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeManifest,
		"config":        config.descriptor,
		"layers":        []descriptor{layer.descriptor},
	})
	if err != nil {
		return err
	}
	desc := manifest.descriptor
	desc.Platform = &platform{Architecture: runtime.GOARCH, OS: "linux"}
	desc.Annotations = map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": ref[strings.LastIndex(ref, ":")+1:],
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeIndex,
		"manifests":     []descriptor{desc},
	})
	if err != nil {
		return fmt.Errorf("marshal index: %w", err)
	}
	return writeLayout(out, index, []blob{config, manifest, layer})
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

func fileBlob(path, mediaType string) (blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return blob{}, fmt.Errorf("open blob: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return blob{}, fmt.Errorf("hash %s: %w", path, err)
	}
	return blob{descriptor: descriptor{MediaType: mediaType, Digest: digest(h.Sum(nil)), Size: n}, path: path}, nil
}

func jsonBlob(mediaType string, v any) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, fmt.Errorf("marshal %s: %w", mediaType, err)
	}
	sum := sha256.Sum256(data)
	return blob{descriptor: descriptor{MediaType: mediaType, Digest: digest(sum[:]), Size: int64(len(data))}, data: data}, nil
}

func digest(sum []byte) string { return "sha256:" + hex.EncodeToString(sum) }

// writeLayout writes the OCI image layout (oci-layout, index.json, blobs/sha256/*) as a tar.
func writeLayout(out string, index []byte, blobs []blob) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create image archive: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close image archive: %w", cerr)
		}
	}()
	tw := tar.NewWriter(f)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return fmt.Errorf("write archive: %w", err)
		}
	}
	if err := addFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := addFile(tw, "index.json", index); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := addBlob(tw, b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish image archive: %w", err)
	}
	return nil
}

func addFile(tw *tar.Writer, name string, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func addBlob(tw *tar.Writer, b blob) error {
	name := "blobs/sha256/" + strings.TrimPrefix(b.Digest, "sha256:")
	if b.path == "" {
		return addFile(tw, name, b.data)
	}
	f, err := os.Open(b.path)
	if err != nil {
		return fmt.Errorf("open blob: %w", err)
	}
	defer f.Close()
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: b.Size, ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
