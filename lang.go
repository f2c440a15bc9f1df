package main

// Language runtimes: the environment variables that point each runtime at
// the right trust file.
//
// A variable that REPLACES a runtime's default trust (SSL_CERT_FILE,
// REQUESTS_CA_BUNDLE) names the merged bundle: the image's own trust plus
// ours, so nothing the image trusted is lost. A variable that ADDS to the
// runtime's trust (NODE_EXTRA_CA_CERTS) names our CAs only.
//
// The plugin sets these in the container's OCI spec, not in the wrapper, so
// that every process sees them: PID 1, its children and exec sessions
// (kubectl exec runs with the spec's environment and never meets the
// wrapper). The files they name are in the staging directory mounted at
// /etc/cainjekt, written by the plugin before the container exists, so they
// are never missing even if the hook fails.

import (
	"slices"
	"strings"
)

// trustEnv is one variable that points a runtime at a trust file.
type trustEnv struct {
	name       string
	value      string   // a file inside the container
	processors []string // set when any of these processors is enabled
}

var trustEnvs = []trustEnv{
	// Go's crypto/x509, OpenSSL (and so Python's ssl, Ruby, PHP, curl).
	{"SSL_CERT_FILE", containerBundle, []string{"lang-go", "lang-python", "lang-ruby"}},
	// Python requests uses certifi's bundle, not OpenSSL's default.
	{"REQUESTS_CA_BUNDLE", containerBundle, []string{"lang-python"}},
	// Node.js uses its compiled-in roots plus this file.
	{"NODE_EXTRA_CA_CERTS", containerCA, []string{"lang-nodejs"}},
}

// langProcessors lists the language processors.
func langProcessors() []string {
	return []string{"lang-go", "lang-nodejs", "lang-python", "lang-ruby"}
}

// envVar is a variable the plugin sets.
type envVar struct{ name, value string }

// trustEnvFor returns the variables to set for the enabled processors, and
// the names of those it leaves alone because the container already sets them:
// a value the pod or image chose itself always wins.
func trustEnvFor(processors, containerEnv []string) (set []envVar, kept []string) {
	for _, e := range trustEnvs {
		if !slices.ContainsFunc(e.processors, func(p string) bool { return slices.Contains(processors, p) }) {
			continue
		}
		if envHas(containerEnv, e.name) {
			kept = append(kept, e.name)
			continue
		}
		set = append(set, envVar{e.name, e.value})
	}
	return set, kept
}

// envHas reports whether a KEY=value list sets name.
func envHas(env []string, name string) bool {
	return slices.ContainsFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == name
	})
}
