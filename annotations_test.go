//go:build !hookonly

package main

import (
	"errors"
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
		"no annotation":               {ann: nil, reason: skipNotEnabled},
		"false":                       {ann: map[string]string{testPrefix + "/enabled": "false"}, reason: skipNotEnabled},
		"true":                        {ann: map[string]string{testPrefix + "/enabled": "true"}, inject: true, processors: all},
		"TRUE with blanks":            {ann: map[string]string{testPrefix + "/enabled": " TRUE "}, inject: true, processors: all},
		"yes is not true":             {ann: map[string]string{testPrefix + "/enabled": "yes"}, reason: skipInvalidAnnotation, warn: `"yes"`},
		"other prefix":                {ann: map[string]string{"other.io/enabled": "true"}, reason: skipNotEnabled},
		"excluded":                    {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/exclude-containers": " istio-proxy , app "}, container: "app", reason: skipContainerExcluded},
		"not excluded":                {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/exclude-containers": "istio-proxy"}, container: "app", inject: true, processors: all},
		"include":                     {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "OS-Debian, lang-python,,"}, inject: true, processors: []string{"os-debian", "lang-python"}},
		"exclude":                     {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.exclude": "os-fallback"}, inject: true, processors: slices.DeleteFunc(slices.Clone(all), func(p string) bool { return p == "os-fallback" })},
		"include unknown":             {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "lang-cobol"}, reason: skipNoProcessors, warn: `unknown processor "lang-cobol"`},
		"natrontech's name":           {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "os-opensuse,lang-java"}, inject: true, processors: []string{"os-suse", "lang-java"}},
		"natrontech's name, excluded": {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.exclude": "OS-openSUSE"}, inject: true, processors: slices.DeleteFunc(slices.Clone(all), func(p string) bool { return p == "os-suse" })},
		"excluded everywhere":         {ann: map[string]string{testPrefix + "/enabled": "true"}, container: "istio-proxy", reason: skipContainerExcluded},
		"include, exclude":            {ann: map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "lang-go", testPrefix + "/processors.exclude": "lang-go"}, reason: skipNoProcessors},
	} {
		pol := injectionPolicy{prefix: testPrefix, excludeContainers: []string{"istio-proxy", "linkerd-proxy"}}
		d := pol.decide(podWith(tc.ann), &api.Container{Name: tc.container})
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
	want := []trustVar{{"SSL_CERT_FILE", containerBundle}, {"PIP_CERT", containerBundle}, {"NODE_EXTRA_CA_CERTS", containerCA}}
	if !slices.Equal(set, want) || !slices.Equal(kept, []string{"REQUESTS_CA_BUNDLE"}) {
		t.Errorf("set %v kept %v", set, kept)
	}
	set, _ = trustEnvFor(allProcessors(), nil)
	if len(set) != 9 {
		t.Errorf("all processors set %d variables, want the 9 there are: %v", len(set), set)
	}
	set, _ = trustEnvFor([]string{"os-debian", "lang-nodejs"}, nil)
	if !slices.Equal(set, []trustVar{{"NODE_EXTRA_CA_CERTS", containerCA}}) {
		t.Errorf("only node enabled: %v", set)
	}
}

func TestOptInModels(t *testing.T) {
	namespaces := map[string]*namespaceInfo{
		"team-a":      {labels: map[string]string{testPrefix + "/enabled": "true"}, annotations: map[string]string{testPrefix + "/bundle": "tenant-a"}},
		"team-b":      {labels: map[string]string{testPrefix + "/enabled": "false"}},
		"plain":       {},
		"kube-system": {},
	}
	lookup := func(name string) (*namespaceInfo, error) {
		if ns, ok := namespaces[name]; ok {
			return ns, nil
		}
		return nil, errors.New("API server unreachable")
	}
	optIn := injectionPolicy{prefix: testPrefix, namespace: lookup}
	optOut := injectionPolicy{prefix: testPrefix, namespace: lookup, optOut: true, excludeNamespaces: []string{"kube-system"}}
	pod := func(ns string, ann, labels map[string]string) *api.PodSandbox {
		return &api.PodSandbox{Name: "web", Namespace: ns, Annotations: ann, Labels: labels}
	}
	on := map[string]string{testPrefix + "/enabled": "true"}
	off := map[string]string{testPrefix + "/enabled": "false"}
	for name, tc := range map[string]struct {
		policy injectionPolicy
		pod    *api.PodSandbox
		inject bool
		reason string
		bundle string
	}{
		"opt-in, namespace label":             {optIn, pod("team-a", nil, nil), true, "", "tenant-a"},
		"opt-in, pod false beats namespace":   {optIn, pod("team-a", off, nil), false, skipNotEnabled, ""},
		"opt-in, pod label false":             {optIn, pod("team-a", nil, off), false, skipNotEnabled, ""},
		"opt-in, pod label true":              {optIn, pod("plain", nil, on), true, "", ""},
		"opt-in, pod bundle beats namespace":  {optIn, pod("team-a", map[string]string{testPrefix + "/bundle": "other"}, nil), true, "", "other"},
		"opt-in, plain namespace":             {optIn, pod("plain", nil, nil), false, skipNotEnabled, ""},
		"opt-in, namespace says no":           {optIn, pod("team-b", on, nil), true, "", ""},
		"opt-in, lookup fails":                {optIn, pod("gone", nil, nil), false, skipNotEnabled, ""},
		"opt-in, no lookups":                  {injectionPolicy{prefix: testPrefix}, pod("team-a", nil, nil), false, skipNotEnabled, ""},
		"opt-out, plain namespace":            {optOut, pod("plain", nil, nil), true, "", ""},
		"opt-out, excluded namespace":         {optOut, pod("kube-system", nil, nil), false, skipNamespaceExcluded, ""},
		"opt-out, excluded namespace, pod on": {optOut, pod("kube-system", on, nil), true, "", ""},
		"opt-out, namespace label false":      {optOut, pod("team-b", nil, nil), false, skipNotEnabled, ""},
		"opt-out, pod false":                  {optOut, pod("plain", off, nil), false, skipNotEnabled, ""},
		"opt-out, lookup fails":               {optOut, pod("gone", nil, nil), true, "", ""},
	} {
		d := tc.policy.decide(tc.pod, &api.Container{Name: "app"})
		if d.inject != tc.inject || d.skipReason != tc.reason || d.bundle != tc.bundle {
			t.Errorf("%s: inject %v reason %q bundle %q, want %v %q %q", name, d.inject, d.skipReason, d.bundle, tc.inject, tc.reason, tc.bundle)
		}
	}
}
