// Package oci writes OCI image layouts as tar archives, the format
// `ctr images import` loads and registry clients push. Everything written is
// a function of its inputs (no timestamps, sorted content), so the same
// inputs give the same digests.
package oci

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Media types of the OCI image spec.
const (
	MediaTypeIndex     = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig    = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer     = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Annotations containerd and registry clients read to name an imported image.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// Descriptor points at a blob.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform is the platform of a manifest in an index.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// Blob is a content-addressed file of the layout: in memory, or streamed from Path.
type Blob struct {
	Descriptor
	Data []byte
	Path string
}

// FileBlob describes the file at path as a blob, streamed when written.
func FileBlob(path, mediaType string) (Blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return Blob{}, fmt.Errorf("open blob: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Blob{}, fmt.Errorf("hash %s: %w", path, err)
	}
	return Blob{Descriptor: Descriptor{MediaType: mediaType, Digest: Digest(h.Sum(nil)), Size: n}, Path: path}, nil
}

// DataBlob describes data as a blob.
func DataBlob(mediaType string, data []byte) Blob {
	sum := sha256.Sum256(data)
	return Blob{Descriptor: Descriptor{MediaType: mediaType, Digest: Digest(sum[:]), Size: int64(len(data))}, Data: data}
}

// JSONBlob marshals v as a blob. encoding/json writes map keys sorted, so
// the bytes, and the digest, depend on v alone.
func JSONBlob(mediaType string, v any) (Blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Blob{}, fmt.Errorf("marshal %s: %w", mediaType, err)
	}
	return DataBlob(mediaType, data), nil
}

// Digest formats a SHA-256 sum as an OCI digest.
func Digest(sum []byte) string { return "sha256:" + hex.EncodeToString(sum) }

// Index marshals an image index of manifests.
func Index(manifests []Descriptor) ([]byte, error) {
	data, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeIndex,
		"manifests":     manifests,
	})
	if err != nil {
		return nil, fmt.Errorf("marshal index: %w", err)
	}
	return data, nil
}

// WriteArchive writes the OCI image layout (oci-layout, index.json,
// blobs/sha256/*) as a tar at out. Each blob is written once, however often
// it is listed.
func WriteArchive(out string, index []byte, blobs []Blob) (err error) {
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
	seen := map[string]bool{}
	for _, b := range blobs {
		if seen[b.Digest] {
			continue
		}
		seen[b.Digest] = true
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

func addBlob(tw *tar.Writer, b Blob) error {
	name := "blobs/sha256/" + strings.TrimPrefix(b.Digest, "sha256:")
	if b.Path == "" {
		return addFile(tw, name, b.Data)
	}
	f, err := os.Open(b.Path)
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
