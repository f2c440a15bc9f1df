package main

// Fuzz targets for everything the hook and the plugin parse from input they
// do not control: os-release, PEM bundles, Java truststores, the OCI state
// and config, the hook's arguments and status.json, pod annotations, the
// API server's namespaces. `make fuzz` runs each for a time budget;
// `go test` runs their seed corpora (testdata/fuzz/ and the f.Add seeds).
// Nothing may panic, hang or allocate without bound.

import (
	"bytes"
	"encoding/pem"
	"io"
	"slices"
	"strings"
	"testing"
)

func FuzzParseOSRelease(f *testing.F) {
	for _, fixture := range []string{"debian/usr/lib/os-release", "rocky/usr/lib/os-release", "opensuse-leap/usr/lib/os-release"} {
		f.Add(readTestdata(f, "rootfs/"+fixture))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := parseOSRelease(data)
		for _, id := range append([]string{r.ID, r.VersionID}, r.IDLike...) {
			if len(id) > 64 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
				t.Fatalf("unsanitised ID %q", id)
			}
		}
		familyFor(r)
	})
}

func FuzzMergeBundle(f *testing.F) {
	f.Add(publicBundle(f))
	f.Add([]byte("-----BEGIN TRUSTED CERTIFICATE-----\nMAA=\n-----END TRUSTED CERTIFICATE-----\n"))
	ours := corpBundle(f)
	f.Fuzz(func(t *testing.T, image []byte) {
		tail, _ := mergeTail(image, ours)
		merged := append(slices.Clone(image), tail...)
		have := bundleSums(merged)
		for _, c := range ours.certs {
			if !have[c.sum] {
				t.Fatal("an injected CA is missing from the merged bundle")
			}
		}
		if again, added := mergeTail(merged, ours); added != 0 || len(again) != 0 {
			t.Fatal("merging twice changed the bundle")
		}
	})
}

func FuzzParseJavaStore(f *testing.F) {
	for _, s := range []string{"cacerts.jks", "cacerts-passwordless.p12", "cacerts-changeit.p12", "cacerts-other-password.jks"} {
		f.Add(readTestdata(f, "java/"+s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseJavaStore(data)
		if err != nil {
			return
		}
		out, err := s.marshal()
		if err != nil {
			t.Fatalf("a store that parsed does not marshal: %v", err)
		}
		again, err := parseJavaStore(bytes.Join(out, nil))
		if err != nil || len(again.entries) != len(s.entries) {
			t.Fatalf("a marshalled store does not parse back: %v", err)
		}
	})
}

func FuzzReadState(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","id":"` + testID + `","status":"creating","pid":42,"bundle":"/run/b"}`))
	f.Add([]byte(`{"id":"../x","bundle":"rel"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := readState(bytes.NewReader(data))
		if err == nil && (!validContainerID(st.ID) || !strings.HasPrefix(st.Bundle, "/")) {
			t.Fatalf("accepted state %+v", st)
		}
	})
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","root":{"path":"rootfs"},"process":{"env":["PATH=/bin","JAVA_HOME=/opt/java"]}}`))
	f.Add([]byte(`{"root":{"path":""}}`))
	f.Add([]byte(`{"root":{"path":"rootfs"},"linux":{"uidMappings":[{"containerID":0,"hostID":131072,"size":65536}],"gidMappings":[{"containerID":0,"hostID":4294967295,"size":4294967295}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := parseSpec(data)
		if err != nil {
			return
		}
		if spec.rootPath == "" || strings.ContainsRune(spec.rootPath, 0) {
			t.Fatalf("accepted root %q", spec.rootPath)
		}
		searchPath(envValue(spec.env, "PATH"))
		if uid, ok := spec.uids.toHost(0); ok && uid < 0 {
			t.Fatalf("the container's root is host uid %d", uid)
		}
	})
}

// pemBlocks reads every bundle of an image: whatever the input, it yields
// blocks in order, inside the data, and finds each certificate encoding/pem
// finds in a block without headers.
func FuzzPEMBlocks(f *testing.F) {
	f.Add(publicBundle(f))
	f.Add(readTestdata(f, "bundles/with-private-key.pem"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN A-----\nMAA=\n-----END B-----\n-----BEGIN A-----\r\nMAA=\r\n-----END A-----"))
	f.Fuzz(func(t *testing.T, data []byte) {
		end := 0
		found := map[string]bool{}
		for blk := range pemBlocks(data) {
			if blk.start < end || blk.end > len(data) || blk.start >= blk.end {
				t.Fatalf("block [%d,%d) after %d in %d bytes", blk.start, blk.end, end, len(data))
			}
			end = blk.end
			if content, err := blk.decode(); err == nil {
				found[blk.typ+"\x00"+string(content)] = true
			}
		}
		for rest := data; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if len(block.Headers) == 0 && !found[block.Type+"\x00"+string(block.Bytes)] {
				t.Fatalf("encoding/pem finds a %q block pemBlocks does not", block.Type)
			}
		}
	})
}

func FuzzParseStagedCAs(f *testing.F) {
	f.Add(corpBundle(f).pem)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseStagedCAs(data)
		if err == nil && (len(b.certs) == 0 || bytes.Count(b.pem, []byte("-----BEGIN CERTIFICATE-----")) != len(b.certs)) {
			t.Fatalf("accepted %d certificates, re-encoded as %q", len(b.certs), b.pem)
		}
	})
}

func FuzzParseHookArgs(f *testing.F) {
	f.Add("--fail-policy fail-closed --dynamic-ca-root /run/c --processors os-debian --bundle b --timeout 5 --log-level info")
	f.Add("--fail-policy fail-open --from-the-future x")
	f.Fuzz(func(t *testing.T, line string) {
		o, err := parseHookArgs(strings.Fields(line), io.Discard)
		if err == nil && (o.timeout <= 0 || !strings.HasPrefix(o.dynamicCARoot, "/") || (o.failPolicy != failOpen && o.failPolicy != failClosed)) {
			t.Fatalf("accepted %+v", o)
		}
	})
}
