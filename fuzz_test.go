package main

// Fuzz targets for everything the hook and the plugin parse from input they
// do not control: os-release, PEM bundles, Java truststores, the OCI state
// and config, pod annotations. `make fuzz` runs each for a time budget;
// `go test` runs their seed corpora (testdata/fuzz/ and the f.Add seeds).
// Nothing may panic, hang or allocate without bound.

import (
	"bytes"
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
	f.Fuzz(func(t *testing.T, data []byte) {
		root, env, err := parseSpec(data)
		if err == nil && (root == "" || strings.ContainsRune(root, 0)) {
			t.Fatalf("accepted root %q", root)
		}
		searchPath(envValue(env, "PATH"))
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
