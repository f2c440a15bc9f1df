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

// maxArchive bounds what ReadArchive holds in memory: the release image's
// archive is about 20 MiB.
const maxArchive = 1 << 30

// Layout is an OCI image layout read back from its archive.
type Layout struct {
	// Image is the image the layout's index.json names: it must name one.
	Image Descriptor
	blobs map[string][]byte
}

// ReadArchive reads an archive WriteArchive wrote, or any OCI image layout
// archive of one image, and checks every blob against its digest.
func ReadArchive(path string) (*Layout, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image archive: %w", err)
	}
	defer f.Close()
	layout := &Layout{blobs: map[string][]byte{}}
	var index []byte
	tr := tar.NewReader(io.LimitReader(f, maxArchive+1))
	read := int64(0)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read image archive %s: %w", path, err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		encoded, isBlob := strings.CutPrefix(name, "blobs/sha256/")
		if hdr.Typeflag != tar.TypeReg || !isBlob && name != "index.json" {
			continue
		}
		if read += hdr.Size; read > maxArchive {
			return nil, fmt.Errorf("image archive %s holds more than %d bytes", path, maxArchive)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read %s of %s: %w", name, path, err)
		}
		if !isBlob {
			index = data
			continue
		}
		if sum := sha256.Sum256(data); Digest(sum[:]) != "sha256:"+encoded {
			return nil, fmt.Errorf("image archive %s: blob %s does not match its digest", path, encoded)
		}
		layout.blobs["sha256:"+encoded] = data
	}
	var top struct{ Manifests []Descriptor }
	if err := json.Unmarshal(index, &top); err != nil {
		return nil, fmt.Errorf("index.json of %s: %w", path, err)
	}
	if len(top.Manifests) != 1 {
		return nil, fmt.Errorf("index.json of %s names %d images, not one", path, len(top.Manifests))
	}
	layout.Image = top.Manifests[0]
	if _, err := layout.Blob(layout.Image); err != nil {
		return nil, err
	}
	return layout, nil
}

// Blob is the content d points at.
func (l *Layout) Blob(d Descriptor) ([]byte, error) {
	data, ok := l.blobs[d.Digest]
	if !ok || int64(len(data)) != d.Size {
		return nil, fmt.Errorf("the image layout lacks %s %s of %d bytes", d.MediaType, d.Digest, d.Size)
	}
	return data, nil
}

// Children are the descriptors an index or a manifest points at: an
// index's manifests; a manifest's config, then its layers.
func (l *Layout) Children(d Descriptor) ([]Descriptor, error) {
	if d.MediaType != MediaTypeIndex && d.MediaType != MediaTypeManifest {
		return nil, nil
	}
	data, err := l.Blob(d)
	if err != nil {
		return nil, err
	}
	var v struct {
		Manifests []Descriptor
		Config    *Descriptor
		Layers    []Descriptor
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("read %s %s: %w", d.MediaType, d.Digest, err)
	}
	if d.MediaType == MediaTypeIndex {
		return v.Manifests, nil
	}
	if v.Config == nil {
		return nil, fmt.Errorf("manifest %s has no config", d.Digest)
	}
	return append([]Descriptor{*v.Config}, v.Layers...), nil
}
