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
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
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
	// pip verifies with its vendored certifi unless told otherwise.
	{"PIP_CERT", containerBundle, []string{"lang-python"}},
	// Node.js uses its compiled-in roots plus this file.
	{"NODE_EXTRA_CA_CERTS", containerCA, []string{"lang-nodejs"}},
	// Deno uses its compiled-in roots plus this file.
	{"DENO_CERT", containerCA, []string{"lang-deno"}},
	// The long tail: tools that ignore SSL_CERT_FILE, or read their own variable first.
	{"CURL_CA_BUNDLE", containerBundle, []string{"tool-curl"}},
	{"GIT_SSL_CAINFO", containerBundle, []string{"tool-git"}},
	{"AWS_CA_BUNDLE", containerBundle, []string{"tool-aws"}},
}

// langProcessors lists the language and tool processors.
func langProcessors() []string {
	return []string{"lang-deno", "lang-go", "lang-java", "lang-nodejs", "lang-python", "lang-ruby", "tool-aws", "tool-curl", "tool-git"}
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

// The hook's part: trust files that language runtimes keep inside the
// image, found from what the image itself says (its PATH, JAVA_HOME and
// VIRTUAL_ENV) before fixed paths, and merged in place like the OS store.

const (
	maxSearchDirs = 32       // PATH entries, prefixes and JVM homes looked at
	maxStoreSize  = 16 << 20 // a JVM's cacerts is about 160 KiB
	// javaFallbackStore is the JVM truststore the hook writes to the staging
	// directory when it cannot rewrite the image's own cacerts.
	javaFallbackStore = "java-cacerts.jks"
)

// langResult is what the language processors did.
type langResult struct {
	changes []fileChange
	// env and appendEnv go to the wrapper: variables only the hook's
	// findings decide, set for PID 1 and its children.
	env, appendEnv map[string]string
}

// searchPath returns the absolute directories of a PATH value, once each.
func searchPath(pathEnv string) []string {
	var dirs []string
	for _, d := range strings.Split(pathEnv, ":") {
		if d = path.Clean(d); path.IsAbs(d) && !slices.Contains(dirs, d) && len(dirs) < maxSearchDirs {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// isRegular reports whether p is a regular file in the image.
func isRegular(root *safeDir, p string) bool {
	_, typ, err := root.stat(p)
	return err == nil && typ == unix.S_IFREG
}

// uniqueFiles keeps the candidate files that exist, canonicalised, each
// real file once. Most candidates do not exist: one lookup says so.
func uniqueFiles(root *safeDir, candidates []string) []string {
	var out []string
	for _, c := range candidates {
		if !isRegular(root, c) {
			continue
		}
		if canon, err := root.canonical(c); err == nil && !slices.Contains(out, canon) {
			out = append(out, canon)
		}
	}
	return out
}

// certifiBundles finds the CA bundles of certifi installs (pip's, and
// pip's own vendored one) under every Python prefix the image has: the
// parent of each PATH directory with a python3, VIRTUAL_ENV, /usr/local and
// /usr. requests, httpx and pip read them, not the OS store; a certifi
// patched to return the OS bundle is left alone.
func certifiBundles(root *safeDir, env []string) []string {
	prefixes := []string{}
	if venv := envValue(env, "VIRTUAL_ENV"); path.IsAbs(venv) {
		prefixes = append(prefixes, path.Clean(venv))
	}
	for _, dir := range searchPath(envValue(env, "PATH")) {
		if isRegular(root, dir+"/python3") || isRegular(root, dir+"/python") {
			prefixes = append(prefixes, path.Dir(dir))
		}
	}
	prefixes = append(prefixes, "/usr/local", "/usr")
	var candidates []string
	for _, prefix := range prefixes[:min(len(prefixes), maxSearchDirs)] {
		libs, _ := root.readDirNames(prefix + "/lib")
		for _, lib := range libs {
			if !strings.HasPrefix(lib, "python3") {
				continue
			}
			for _, site := range []string{"site-packages", "dist-packages"} {
				dir := path.Join(prefix, "lib", lib, site)
				for _, pkg := range []string{dir + "/certifi", dir + "/pip/_vendor/certifi"} {
					if isRegular(root, pkg+"/cacert.pem") && certifiUsesItsBundle(root, pkg) {
						candidates = append(candidates, pkg+"/cacert.pem")
					}
				}
			}
		}
	}
	return uniqueFiles(root, candidates)
}

// certifiUsesItsBundle tells a certifi that serves its own cacert.pem (as
// pip installs it) from one a distribution patched to return the OS bundle
// (Debian's, Fedora's, Alpine's), whose cacert.pem nothing reads: the
// upstream core.py names the file, the patched ones do not. Without a
// readable core.py (an image that keeps only .pyc files) the bundle is
// merged: a merge too many costs a millisecond, one too few an outage.
func certifiUsesItsBundle(root *safeDir, pkg string) bool {
	core, _, err := root.readFile(pkg+"/core.py", maxOSReleaseSize)
	return err != nil || bytes.Contains(core, []byte("cacert.pem"))
}

// javaStores finds the cacerts of every JVM in the image: JAVA_HOME, the
// JVM behind each java in PATH (following its symlinks, inside the image),
// and the usual homes (/usr/lib/jvm/*, Temurin's /opt/java/openjdk).
func javaStores(root *safeDir, env []string) []string {
	var homes []string
	if home := envValue(env, "JAVA_HOME"); path.IsAbs(home) {
		homes = append(homes, path.Clean(home))
	}
	for _, dir := range searchPath(envValue(env, "PATH")) {
		if !isRegular(root, dir+"/java") {
			continue
		}
		if java, err := root.canonical(dir + "/java"); err == nil {
			homes = append(homes, path.Dir(path.Dir(java)))
		}
	}
	jvms, _ := root.readDirNames("/usr/lib/jvm")
	for _, j := range jvms {
		homes = append(homes, "/usr/lib/jvm/"+j)
	}
	homes = append(homes, "/opt/java/openjdk")
	var candidates []string
	for _, home := range homes[:min(len(homes), maxSearchDirs)] {
		// JDK 9 and later, then JDK 8's layout (and a JRE's home inside a JDK).
		candidates = append(candidates, home+"/lib/security/cacerts", home+"/jre/lib/security/cacerts")
	}
	return uniqueFiles(root, candidates)
}

// ownBundles finds the files the container's own trust variables name, for
// the enabled processors: a pod or image that sets SSL_CERT_FILE keeps its
// value, and the file, if the image has it, gets our CAs merged in.
func ownBundles(root *safeDir, processors, env []string) []string {
	var candidates []string
	for _, e := range trustEnvs {
		v := envValue(env, e.name)
		if path.IsAbs(v) && v != e.value && slices.ContainsFunc(e.processors, func(p string) bool { return slices.Contains(processors, p) }) {
			candidates = append(candidates, v)
		}
	}
	return uniqueFiles(root, candidates)
}

// injectLanguages runs the enabled language processors on the image.
// trust is the staged bundle (the image's trust merged with ours), from
// which the JVM fallback store is built; done lists files already merged.
func injectLanguages(root, staging *safeDir, processors, env []string, ours *caBundle, trust []byte, done []string) (langResult, error) {
	res := langResult{env: map[string]string{}, appendEnv: map[string]string{}}
	var bundles []string
	if slices.Contains(processors, "lang-python") {
		bundles = certifiBundles(root, env)
	}
	var errs []error
	for _, p := range append(bundles, ownBundles(root, processors, env)...) {
		if slices.Contains(done, p) {
			continue
		}
		done = append(done, p)
		c, err := mergeBundleFile(root, p, ours)
		res.changes = append(res.changes, c)
		errs = append(errs, err)
	}
	if slices.Contains(processors, "lang-java") {
		errs = append(errs, injectJava(root, staging, env, ours, trust, &res))
	}
	return res, errors.Join(errs...)
}

// mergeBundleFile merges ours into one PEM bundle file of the image.
func mergeBundleFile(root *safeDir, p string, ours *caBundle) (fileChange, error) {
	c := fileChange{Path: p, Action: "unchanged"}
	data, _, err := root.readFile(p, maxBundleSize)
	if err == nil {
		var merged []byte
		if merged, c.Added = mergeBundle(data, ours); c.Added > 0 {
			c.Action = "merged"
			_, err = root.writeFile(p, merged, 0o644)
		}
	}
	if err != nil {
		c.Action, c.Error = "failed", err.Error()
	}
	return c, err
}

// injectJava merges ours into each JVM's cacerts, in its own format, so
// every JVM process, exec sessions included, trusts them with no option at
// all. A store it cannot rewrite gets the fallback: a JKS of the merged
// bundle in the staging directory, named by JAVA_TOOL_OPTIONS for PID 1.
func injectJava(root, staging *safeDir, env []string, ours *caBundle, trust []byte, res *langResult) error {
	fallback := false
	for _, p := range javaStores(root, env) {
		c, err := mergeJavaStore(root, p, ours)
		if errors.Is(err, errStoreUnsupported) {
			c.Action, fallback = "fallback", true
			err = nil
		}
		res.changes = append(res.changes, c)
		if err != nil {
			return err
		}
	}
	if !fallback {
		return nil
	}
	if err := writeFallbackStore(staging, trust); err != nil {
		return err
	}
	if opts := envValue(env, "JAVA_TOOL_OPTIONS"); !strings.Contains(opts, "javax.net.ssl.trustStore=") {
		res.appendEnv["JAVA_TOOL_OPTIONS"] = "-Djavax.net.ssl.trustStore=" + containerDir + "/" + javaFallbackStore +
			" -Djavax.net.ssl.trustStoreType=JKS -Djavax.net.ssl.trustStorePassword=changeit"
	}
	return nil
}

func mergeJavaStore(root *safeDir, p string, ours *caBundle) (fileChange, error) {
	c := fileChange{Path: p, Action: "unchanged"}
	data, _, err := root.readFile(p, maxStoreSize)
	var store *javaStore
	if err == nil {
		store, err = parseJavaStore(data)
	}
	if err == nil {
		if c.Added = store.add(ours); c.Added > 0 {
			c.Action = "merged"
			if data, err = store.marshal(); err == nil {
				_, err = root.writeFile(p, data, 0o644)
			}
		}
	}
	if err != nil {
		c.Action, c.Error = "failed", err.Error()
	}
	return c, err
}

// writeFallbackStore writes the merged bundle as a JKS truststore.
func writeFallbackStore(staging *safeDir, trust []byte) error {
	var entries []storeEntry
	for rest := trust; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if der := certificateDER(block); der != nil {
			entries = append(entries, storeEntry{alias: fmt.Sprintf("cert-%d", len(entries)), der: der})
		}
	}
	data, err := marshalJKS(entries, "changeit")
	if err == nil {
		_, err = staging.writeFile(javaFallbackStore, data, 0o644)
	}
	if err != nil {
		return fmt.Errorf("write JVM fallback truststore: %w", err)
	}
	return nil
}
