//go:build !hookonly

package main

import (
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		caFile: "/etc/cainjekt/ca-bundle.pem", annotationPrefix: "cainjekt.natron.io", failPolicy: failOpen,
		logLevel: slog.LevelInfo, logFormat: "json", hookTimeout: 5 * time.Second,
		dynamicCARoot: "/run/cainjekt/containers", socket: "/var/run/nri/nri.sock",
		name: "cainjekt", idx: "10", httpAddr: ":9443",
		injectionPolicy: policyOptIn, excludeNamespaces: []string{"kube-system"},
		kubeCAFile: serviceAccountDir + "/ca.crt", kubeTokenFile: serviceAccountDir + "/token",
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("defaults\n got %+v\nwant %+v", *c, want)
	}
}

func TestConfigFlagBeatsEnvBeatsDefault(t *testing.T) {
	env := envOf(map[string]string{
		"CAINJEKT_FAIL_POLICY":       "fail-closed",
		"CAINJEKT_HOOK_TIMEOUT_SEC":  "9",
		"CAINJEKT_LOG_LEVEL":         "debug",
		"CAINJEKT_ANNOTATION_PREFIX": "ca.example.com",
		"CAINJEKT_DYNAMIC_CA_ROOT":   "/run/x/../y/",
	})
	c, err := loadConfig([]string{"--fail-policy", "fail-open", "--idx=42"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.failPolicy != failOpen || c.hookTimeout != 9*time.Second || c.logLevel != slog.LevelDebug ||
		c.annotationPrefix != "ca.example.com" || c.idx != "42" || c.dynamicCARoot != "/run/y" {
		t.Errorf("got %+v", *c)
	}
}

func TestConfigRejectsBadValues(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want []string
	}{
		"policy":  {env: map[string]string{"CAINJEKT_FAIL_POLICY": "fail-maybe"}, want: []string{"CAINJEKT_FAIL_POLICY", "fail-maybe", "fail-open, fail-closed"}},
		"timeout": {env: map[string]string{"CAINJEKT_HOOK_TIMEOUT_SEC": "5s"}, want: []string{"CAINJEKT_HOOK_TIMEOUT_SEC", "whole number"}},
		"zero":    {args: []string{"--hook-timeout=0"}, want: []string{"--hook-timeout", "from 1 to 60"}},
		"level":   {env: map[string]string{"CAINJEKT_LOG_LEVEL": "verbose"}, want: []string{"CAINJEKT_LOG_LEVEL"}},
		"prefix":  {env: map[string]string{"CAINJEKT_ANNOTATION_PREFIX": "Bad_Prefix"}, want: []string{"CAINJEKT_ANNOTATION_PREFIX", "DNS label"}},
		"ca file": {env: map[string]string{"CAINJEKT_CA_FILE": "relative.pem"}, want: []string{"CAINJEKT_CA_FILE", "absolute"}},
		"idx":     {args: []string{"--idx", "7"}, want: []string{"--idx", "two digits"}},
		"addr":    {args: []string{"--http-addr", "9443"}, want: []string{"--http-addr"}},
		"two":     {env: map[string]string{"CAINJEKT_FAIL_POLICY": "x", "CAINJEKT_LOG_FORMAT": "xml"}, want: []string{"CAINJEKT_FAIL_POLICY", "CAINJEKT_LOG_FORMAT"}},
		"args":    {args: []string{"extra"}, want: []string{"unexpected arguments"}},
		"policy2": {env: map[string]string{"CAINJEKT_INJECTION_POLICY": "always"}, want: []string{"CAINJEKT_INJECTION_POLICY", "opt-in, opt-out"}},
		"api":     {args: []string{"--kube-api", "http://10.0.0.1"}, want: []string{"--kube-api", "https://"}},
		"ns":      {env: map[string]string{"CAINJEKT_EXCLUDE_NAMESPACES": "kube-system,Bad_NS"}, want: []string{"CAINJEKT_EXCLUDE_NAMESPACES", "Bad_NS"}},
		"node":    {env: map[string]string{"CAINJEKT_NODE_NAME": "node 1\n"}, want: []string{"CAINJEKT_NODE_NAME", "DNS label"}},
	} {
		_, err := loadConfig(tc.args, envOf(tc.env), io.Discard)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", name, err, w)
			}
		}
	}
}

func TestConfigFindsTheAPIServerInACluster(t *testing.T) {
	env := envOf(map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
	c, err := loadConfig(nil, env, io.Discard)
	if err != nil || c.kubeAPI != "https://10.96.0.1:443" {
		t.Errorf("kube API %q, %v", c.kubeAPI, err)
	}
	c, err = loadConfig([]string{"--kube-api=off"}, env, io.Discard)
	if err != nil || c.kubeAPI != "" {
		t.Errorf("off: kube API %q, %v", c.kubeAPI, err)
	}
	if got := inClusterAPI(envOf(map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})); got != "https://[fd00::1]:443" {
		t.Errorf("IPv6: %q", got)
	}
}
