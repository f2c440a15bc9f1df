package main

// Fuzz targets for everything the hook and the plugin parse from input they
// do not control: os-release, PEM bundles, Java truststores, the OCI state
// and config, the hook's arguments and status.json, pod annotations, the
// API server's namespaces. `make fuzz` runs each for a time budget;
// `go test` runs their seed corpora (testdata/fuzz/ and the f.Add seeds).
// Nothing may panic, hang or allocate without bound.

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
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

func FuzzParseCABundle(f *testing.F) {
	f.Add(readTestdata(f, "bundles/with-private-key.pem"))
	f.Add(readTestdata(f, "certs/corp-root.pem"))
	f.Add(readTestdata(f, "bundles/corp-root.der"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, _, err := parseCABundle(data)
		if err != nil {
			return
		}
		if bytes.Contains(b.pem, []byte("PRIVATE")) || countCerts(b.pem) != len(b.certs) {
			t.Fatalf("the staged PEM holds more than its %d certificates", len(b.certs))
		}
		lintCertificates(b, time.Now())
	})
}

func FuzzMergeBundle(f *testing.F) {
	f.Add(publicBundle(f))
	f.Add([]byte("-----BEGIN TRUSTED CERTIFICATE-----\nMAA=\n-----END TRUSTED CERTIFICATE-----\n"))
	ours := corpBundle(f)
	f.Fuzz(func(t *testing.T, image []byte) {
		merged, _ := mergeBundle(image, ours)
		if !bytes.HasPrefix(merged, image) {
			t.Fatal("the image's bundle was not kept byte for byte")
		}
		have := bundleSums(merged)
		for _, c := range ours.certs {
			if !have[c.sum] {
				t.Fatal("an injected CA is missing from the merged bundle")
			}
		}
		if again, added := mergeBundle(merged, ours); added != 0 || !bytes.Equal(again, merged) {
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
		again, err := parseJavaStore(out)
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
		if o, ok := spec.ids.toHost(fileOwner{0, 0}); ok && (o.uid < 0 || o.gid < 0) {
			t.Fatalf("the container's root is host %+v", o)
		}
	})
}

func FuzzDecide(f *testing.F) {
	f.Add("true", "os-debian,lang-python", "os-fallback", "istio-proxy", "cainject.natron.io/enabled", "app")
	f.Add(" TRUE ", ";;, ,", "\x00", strings.Repeat("a", 5000), "cainjekt.natron.io/enable", "")
	f.Fuzz(func(t *testing.T, enabled, include, exclude, excluded, otherKey, name string) {
		pod := podWith(map[string]string{
			testPrefix + "/enabled":            enabled,
			testPrefix + "/processors.include": include,
			testPrefix + "/processors.exclude": exclude,
			testPrefix + "/exclude-containers": excluded,
			otherKey:                           "true",
		})
		d := injectionPolicy{prefix: testPrefix, namespace: func(string) (*namespaceInfo, error) {
			return &namespaceInfo{labels: map[string]string{testPrefix + "/bundle": include}}, nil
		}}.decide(pod, &api.Container{Name: name})
		for _, p := range d.processors {
			if !strings.HasPrefix(p, "os-") && !strings.HasPrefix(p, "lang-") && !strings.HasPrefix(p, "tool-") {
				t.Fatalf("processor %q is not one of ours", p)
			}
		}
		if d.inject == (d.skipReason != "") {
			t.Fatalf("inject %v with skip reason %q", d.inject, d.skipReason)
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

// status.json is written by the hook, in a directory the plugin owns, but
// holds what an image made the hook meet: its readers take anything. The
// wrapper only ever adds variables to the container's environment.
func FuzzStatusReaders(f *testing.F) {
	f.Add([]byte(`{"result":"ok","image_trust_bytes":3,"wrapper":{"injected":true,"append":{"JAVA_TOOL_OPTIONS":"-Dx"},"env":{"A":"b"}}}`))
	f.Add([]byte(`{"wrapper":{"env":{"PATH":"/evil"}},"image_trust_bytes":-1}`))
	env := []string{"PATH=/usr/bin", "JAVA_TOOL_OPTIONS=-Dmine"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var st hookStatus
		if json.Unmarshal(data, &st) == nil {
			var c injectedContainer
			c.learn(fromStatus(&st))
		}
		ctx, err := parseHookContext(data)
		if err != nil {
			return
		}
		out := appendEnv(withEnv(slices.Clone(env), ctx.Env), ctx.Append)
		if envValue(out, "PATH") != "/usr/bin" || !strings.HasPrefix(envValue(out, "JAVA_TOOL_OPTIONS"), "-Dmine") {
			t.Fatalf("the wrapper changed what the container set: %q", out)
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

func FuzzParseNamespace(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"shop","labels":{"cainjekt.natron.io/enabled":"true"},"annotations":{"a":"b"}}}`))
	f.Add([]byte(`{"metadata":{"labels":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if info, err := parseNamespace(body); err == nil {
			info.metadata(testPrefix + "/enabled")
		}
	})
}
