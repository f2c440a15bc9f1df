//go:build !hookonly

package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
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
		injectionPolicy: policyOptIn, excludeNamespaces: []string{"kube-system"}, excludeContainers: []string{},
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

// natrontech/cainjekt's manifests keep working: its name for the host
// binary, its prefix written with the '/', its cluster-wide container list.
func TestConfigAcceptsNatrontechNames(t *testing.T) {
	env := envOf(map[string]string{
		"CAINJEKT_PLUGIN_BINARY_PATH": "/opt/cainjekt/bin/cainjekt",
		"CAINJEKT_ANNOTATION_PREFIX":  "cainjekt.natron.io/",
		"CAINJEKT_EXCLUDE_CONTAINERS": "istio-proxy, linkerd-proxy",
	})
	c, err := loadConfig(nil, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.hostBinary != "/opt/cainjekt/bin/cainjekt" || c.annotationPrefix != "cainjekt.natron.io" ||
		!reflect.DeepEqual(c.excludeContainers, []string{"istio-proxy", "linkerd-proxy"}) {
		t.Errorf("got host binary %q, prefix %q, excluded containers %q", c.hostBinary, c.annotationPrefix, c.excludeContainers)
	}
	// Our own name wins over the alias, and a bad alias value names both.
	env = envOf(map[string]string{"CAINJEKT_PLUGIN_BINARY_PATH": "/a", "CAINJEKT_HOST_BINARY": "/b"})
	if c, err := loadConfig(nil, env, io.Discard); err != nil || c.hostBinary != "/b" {
		t.Errorf("both set: host binary %q, %v", c.hostBinary, err)
	}
	_, err = loadConfig(nil, envOf(map[string]string{"CAINJEKT_PLUGIN_BINARY_PATH": "cainjekt"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "CAINJEKT_HOST_BINARY or CAINJEKT_PLUGIN_BINARY_PATH") {
		t.Errorf("relative alias: %v", err)
	}
	_, err = loadConfig(nil, envOf(map[string]string{"CAINJEKT_EXCLUDE_CONTAINERS": "Bad_Name"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `"Bad_Name" is not a container name`) {
		t.Errorf("bad container name: %v", err)
	}
}

func TestUnknownVariablesAreNamedWithTheClosestSetting(t *testing.T) {
	environ := []string{
		"CAINJEKT_FAILPOLICY=fail-closed",        // the issue's own example
		"CAINJEKT_HOOK_TIMEOUT=20",               // the _SEC forgotten
		"cainjekt_log_level=debug",               // lower case is not read either
		"CAINJEKT_ENABLE_EVERYTHING=true",        // nothing close
		"CAINJEKT_FAIL_POLICY=fail-open",         // known
		"CAINJEKT_PLUGIN_BINARY_PATH=/x",         // natrontech's, known
		"PATH=/usr/bin",                          // not ours
		"CAINJEKT_METRICS_SERVICE_HOST=10.0.0.9", // the kubelet's, for Service cainjekt-metrics
		"CAINJEKT_METRICS_SERVICE_PORT=9443",
		"CAINJEKT_METRICS_SERVICE_PORT_METRICS=9443",
		"CAINJEKT_METRICS_PORT=tcp://10.0.0.9:9443",
		"CAINJEKT_METRICS_PORT_9443_TCP_ADDR=10.0.0.9",
		"CAINJEKT_SERVICE_HOST=10.0.0.8", // for a Service named cainjekt
		"CAINJEKT_PORT_9443_TCP=tcp://10.0.0.8:9443",
		"CAINJEKT_HTTP_PORT=9443", // looks like a link, but no CAINJEKT_HTTP_SERVICE_HOST
	}
	got := unknownVariables(environ)
	want := []unknownVariable{
		{"CAINJEKT_ENABLE_EVERYTHING", ""},
		{"CAINJEKT_FAILPOLICY", "CAINJEKT_FAIL_POLICY"},
		{"CAINJEKT_HOOK_TIMEOUT", "CAINJEKT_HOOK_TIMEOUT_SEC"},
		{"CAINJEKT_HTTP_PORT", ""},
		{"cainjekt_log_level", "CAINJEKT_LOG_LEVEL"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unknown variables\n got %q\nwant %q", got, want)
	}
}

// The plugin's log names each unknown variable with the closest setting,
// or where the settings are listed.
func TestPluginWarnsOfUnknownVariables(t *testing.T) {
	var log bytes.Buffer
	warnUnknownVariables(newLogger(&log, "text", slog.LevelInfo), []string{"CAINJEKT_FAILPOLICY=fail-closed", "CAINJEKT_ENABLE_EVERYTHING=true"})
	for _, want := range []string{
		`level=WARN msg="unknown variable ignored: no setting reads it; did you mean CAINJEKT_FAIL_POLICY?" variable=CAINJEKT_FAILPOLICY`,
		`level=WARN msg="unknown variable ignored: no setting reads it; cainjekt plugin -h lists the settings" variable=CAINJEKT_ENABLE_EVERYTHING`,
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log has no %s:\n%s", want, &log)
		}
	}
}

// The start log line holds every setting, as in force.
func TestStartLogNamesEverySetting(t *testing.T) {
	c, err := loadConfig([]string{"--hook-timeout=7", "--bundles-dir=/etc/cainjekt/bundles"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range c.effective() {
		got[a.Key] = a.Value.String()
	}
	for _, s := range settings {
		if _, ok := got[strings.ReplaceAll(s.flag, "-", "_")]; !ok {
			t.Errorf("setting %s is not in the start log", s.flag)
		}
	}
	for key, want := range map[string]string{"hook_timeout": "7s", "bundles_dir": "/etc/cainjekt/bundles", "http_addr": ":9443", "log_level": "INFO", "kube_api": "off"} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
}

// The README's settings table has every setting, with its flag and its
// default as written in the code.
func TestReadmeListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(readme), "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) >= 3 && strings.HasPrefix(line, "| `CAINJEKT_") {
			rows[strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")] = cells
		}
	}
	for _, s := range settings {
		cells, ok := rows[s.env]
		if !ok {
			t.Errorf("README has no row for %s", s.env)
			continue
		}
		if cells[1] != "`--"+s.flag+"`" {
			t.Errorf("README: %s's flag is %s, want --%s", s.env, cells[1], s.flag)
		}
		if s.def != "" && cells[2] != "`"+s.def+"`" {
			t.Errorf("README: %s's default is %s, want %q", s.env, cells[2], s.def)
		}
	}
	if len(rows) != len(settings) {
		t.Errorf("README lists %d settings, the code has %d", len(rows), len(settings))
	}
}
