//go:build !hookonly

package main

// Fuzz targets of what the plugin parses (fuzz_test.go has the hook's).

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
)

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

func FuzzParseNamespace(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"shop","labels":{"cainjekt.natron.io/enabled":"true"},"annotations":{"a":"b"}}}`))
	f.Add([]byte(`{"metadata":{"labels":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if info, err := parseNamespace(body); err == nil {
			info.metadata(testPrefix + "/enabled")
		}
	})
}
