package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
)

const testPrefix = "cainjekt.natron.io"

func podWith(ann map[string]string) *api.PodSandbox {
	return &api.PodSandbox{Id: "pod", Name: "web", Namespace: "shop", Annotations: ann}
}

func TestDecide(t *testing.T) {
	all := allProcessors()
	for name, tc := range map[string]struct {
		ann        map[string]string
		container  string
		inject     bool
		reason     string
		processors []string
		warn       string
	}{
		"no annotation":    {ann: nil, reason: skipNotEnabled},
		"false":            {ann: map[string]string{testPrefix + "/enabled": "false"}, reason: skipNotEnabled},
		"true":             {ann: map[string]string{testPrefix + "/enabled": "true"}, inject: true, processors: all},
		"TRUE with blanks": {ann: map[string]string{testPrefix + "/enabled": " TRUE "}, inject: true, processors: all},
		"yes is not true":  {ann: map[string]string{testPrefix + "/enabled": "yes"}, reason: skipInvalidAnnotation, warn: `"yes"`},
		"other prefix":     {ann: map[string]string{"other.io/enabled": "true"}, reason: skipNotEnabled},
		"excluded":         {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/exclude-containers": " istio-proxy , app "}, container: "app", reason: skipContainerExcluded},
		"not excluded":     {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/exclude-containers": "istio-proxy"}, container: "app", inject: true, processors: all},
		"include":          {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "OS-Debian, lang-python,,"}, inject: true, processors: []string{"os-debian", "lang-python"}},
		"exclude":          {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.exclude": "os-fallback"}, inject: true, processors: slices.DeleteFunc(slices.Clone(all), func(p string) bool { return p == "os-fallback" })},
		"include unknown":  {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "lang-cobol"}, reason: skipNoProcessors, warn: `unknown processor "lang-cobol"`},
		"include, exclude": {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "lang-go", testPrefix + "/processors.exclude": "lang-go"}, reason: skipNoProcessors},
	} {
		d := decide(testPrefix, podWith(tc.ann), &api.Container{Name: tc.container})
		if d.inject != tc.inject || d.skipReason != tc.reason {
			t.Errorf("%s: inject=%v reason=%q, want %v %q", name, d.inject, d.skipReason, tc.inject, tc.reason)
		}
		if tc.inject && !slices.Equal(d.processors, tc.processors) {
			t.Errorf("%s: processors %v, want %v", name, d.processors, tc.processors)
		}
		var msgs []string
		for _, w := range d.warnings {
			msgs = append(msgs, w.msg)
		}
		if got := strings.Join(msgs, "\n"); tc.warn != "" && !strings.Contains(got, tc.warn) || tc.warn == "" && got != "" {
			t.Errorf("%s: warnings %q, want one with %q", name, got, tc.warn)
		}
	}
}

func TestTrustEnvPodValuesWin(t *testing.T) {
	set, kept := trustEnvFor([]string{"lang-python", "lang-nodejs"}, []string{"PATH=/bin", "REQUESTS_CA_BUNDLE=/app/ca.pem"})
	want := []envVar{{"SSL_CERT_FILE", containerBundle}, {"PIP_CERT", containerBundle}, {"NODE_EXTRA_CA_CERTS", containerCA}}
	if !slices.Equal(set, want) || !slices.Equal(kept, []string{"REQUESTS_CA_BUNDLE"}) {
		t.Errorf("set %v kept %v", set, kept)
	}
	set, _ = trustEnvFor(allProcessors(), nil)
	if len(set) != len(trustEnvs) {
		t.Errorf("all processors set %d of %d variables", len(set), len(trustEnvs))
	}
	set, _ = trustEnvFor([]string{"os-debian", "lang-nodejs"}, nil)
	if !slices.Equal(set, []envVar{{"NODE_EXTRA_CA_CERTS", containerCA}}) {
		t.Errorf("only node enabled: %v", set)
	}
}
