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
// Every search is bounded: in the directories it looks at, the entries it
// lists (see readDir), and the files it keeps; one that reaches a bound
// stops there and says so.

const (
	maxSearchDirs = 32      // PATH entries, prefixes and JVM homes looked at
	maxPythons    = 8       // python3* directories taken from one lib directory
	maxJVMs       = 32      // entries of /usr/lib/jvm taken as JVM homes
	maxStoreSize  = 4 << 20 // a JVM's cacerts is about 160 KiB
	// javaFallbackStore is the JVM truststore the hook writes to the staging
	// directory when it cannot rewrite the image's own cacerts.
	javaFallbackStore = "java-cacerts.jks"
)

// injection is the hook's work on one container: what it knows of it, and
// which real files it merged already, so that none is merged twice.
type injection struct {
	root, staging *safeDir
	processors    []string
	env           []string // the container process's environment
	ours          *caBundle
	trust         []byte    // the staged bundle: the image's trust merged with ours
	trustAttrs    fileAttrs // what staged files holding the image's trust get
	merged        map[string]bool
}

func (in *injection) enabled(processor string) bool { return slices.Contains(in.processors, processor) }

// langResult is what the language processors did.
type langResult struct {
	changes []fileChange
	// env and appendEnv go to the wrapper: variables only the hook's
	// findings decide, set for PID 1 and its children.
	env, appendEnv map[string]string
}

// searchPath returns the absolute directories of a PATH value, once each,
// at most maxSearchDirs of them.
func searchPath(pathEnv string) []string {
	var dirs []string
	for rest := pathEnv; rest != "" && len(dirs) < maxSearchDirs; {
		var d string
		d, rest, _ = strings.Cut(rest, ":")
		if d = path.Clean(d); path.IsAbs(d) && !slices.Contains(dirs, d) {
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
	seen := map[string]bool{}
	for _, c := range candidates {
		if !isRegular(root, c) {
			continue
		}
		if canon, err := root.canonical(c); err == nil && !seen[canon] {
			seen[canon] = true
			out = append(out, canon)
		}
	}
	return out
}

// uniqueDirs keeps each directory once, in order, the first maxSearchDirs
// of them.
func uniqueDirs(dirs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, d := range dirs {
		if !seen[d] && len(out) < maxSearchDirs {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// listDir lists what keep accepts in the image directory p, at most max
// names: a directory that is not there is empty, one that holds too much
// gives what was found and the error that says where the search stopped.
func listDir(root *safeDir, p string, keep func(string) bool, max int) ([]string, error) {
	names, err := root.readDir(p, keep, max)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		err = nil
	}
	return names, err
}

// certifiBundles finds the CA bundles of certifi installs (pip's, and
// pip's own vendored one) under every Python prefix the image has: the
// parent of each PATH directory with a python3, VIRTUAL_ENV, /usr/local and
// /usr. requests, httpx and pip read them, not the OS store; a certifi
// patched to return the OS bundle is left alone.
func certifiBundles(root *safeDir, env []string) ([]string, error) {
	var prefixes []string
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
	var errs []error
	isPython := func(name string) bool { return strings.HasPrefix(name, "python3") }
	for _, prefix := range uniqueDirs(prefixes) {
		libs, err := listDir(root, prefix+"/lib", isPython, maxPythons)
		errs = append(errs, err)
		for _, lib := range libs {
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
	return uniqueFiles(root, candidates), errors.Join(errs...)
}

// certifiUsesItsBundle tells a certifi that serves its own cacert.pem (as
// pip installs it) from one a distribution patched to return the OS bundle
// (Debian's, Fedora's, Alpine's), whose cacert.pem nothing reads: the
// upstream core.py names the file, the patched ones do not. Without a
// readable core.py (an image that keeps only .pyc files) the bundle is
// merged: a merge too many costs a millisecond, one too few an outage.
func certifiUsesItsBundle(root *safeDir, pkg string) bool {
	core, _, err := root.readFile(pkg+"/core.py", maxCoreSize)
	return err != nil || bytes.Contains(core, []byte("cacert.pem"))
}

// maxCoreSize bounds certifi's core.py, which is about 3 KiB.
const maxCoreSize = 64 << 10

// javaStores finds the cacerts of every JVM in the image: JAVA_HOME, the
// JVM behind each java in PATH (following its symlinks, inside the image),
// and the usual homes (/usr/lib/jvm/*, Temurin's /opt/java/openjdk).
func javaStores(root *safeDir, env []string) ([]string, error) {
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
	jvms, err := listDir(root, "/usr/lib/jvm", nil, maxJVMs)
	for _, j := range jvms {
		homes = append(homes, "/usr/lib/jvm/"+j)
	}
	homes = append(homes, "/opt/java/openjdk")
	var candidates []string
	for _, home := range uniqueDirs(homes) {
		// JDK 9 and later, then JDK 8's layout (and a JRE's home inside a JDK).
		candidates = append(candidates, home+"/lib/security/cacerts", home+"/jre/lib/security/cacerts")
	}
	return uniqueFiles(root, candidates), err
}

// ownBundles finds the files the container's own trust variables name, for
// the enabled processors: a pod or image that sets SSL_CERT_FILE keeps its
// value, and the file, if the image has it, gets our CAs merged in.
func (in *injection) ownBundles() []string {
	var candidates []string
	for _, e := range trustEnvs {
		v := envValue(in.env, e.name)
		if path.IsAbs(v) && v != e.value && slices.ContainsFunc(e.processors, in.enabled) {
			candidates = append(candidates, v)
		}
	}
	return uniqueFiles(in.root, candidates)
}

// injectLanguages runs the enabled language processors on the image.
func (in *injection) injectLanguages() (langResult, error) {
	res := langResult{env: map[string]string{}, appendEnv: map[string]string{}}
	var bundles []string
	var errs []error
	if in.enabled("lang-python") {
		var err error
		bundles, err = certifiBundles(in.root, in.env)
		errs = append(errs, err)
	}
	for _, p := range append(bundles, in.ownBundles()...) {
		if in.merged[p] {
			continue
		}
		in.merged[p] = true
		c, err := mergeBundleFile(in.root, p, in.ours)
		res.changes = append(res.changes, c)
		errs = append(errs, err)
	}
	if in.enabled("lang-java") {
		errs = append(errs, in.injectJava(&res))
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
func (in *injection) injectJava(res *langResult) error {
	stores, searchErr := javaStores(in.root, in.env)
	fallback := false
	for _, p := range stores {
		if in.merged[p] {
			continue
		}
		in.merged[p] = true
		c, err := mergeJavaStore(in.root, p, in.ours)
		if errors.Is(err, errStoreUnsupported) {
			c.Action, fallback = "fallback", true
			err = nil
		}
		res.changes = append(res.changes, c)
		if err != nil {
			return errors.Join(searchErr, err)
		}
	}
	if !fallback {
		return searchErr
	}
	if err := writeFallbackStore(in.staging, in.trust, in.trustAttrs); err != nil {
		return errors.Join(searchErr, err)
	}
	if opts := envValue(in.env, "JAVA_TOOL_OPTIONS"); !strings.Contains(opts, "javax.net.ssl.trustStore=") {
		res.appendEnv["JAVA_TOOL_OPTIONS"] = "-Djavax.net.ssl.trustStore=" + containerDir + "/" + javaFallbackStore +
			" -Djavax.net.ssl.trustStoreType=JKS -Djavax.net.ssl.trustStorePassword=changeit"
	}
	return searchErr
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

// writeFallbackStore writes the merged bundle as a JKS truststore, with
// the attributes of the bundle it holds.
func writeFallbackStore(staging *safeDir, trust []byte, attrs fileAttrs) error {
	certs, err := bundleCertificates(trust, maxStoreEntries)
	var data []byte
	if err == nil {
		entries := make([]storeEntry, len(certs))
		for i, der := range certs {
			entries[i] = storeEntry{alias: fmt.Sprintf("cert-%d", i), der: der}
		}
		data, err = marshalJKS(entries, "changeit")
	}
	if err == nil {
		err = staging.writeFileAs(javaFallbackStore, data, attrs)
	}
	if err != nil {
		return fmt.Errorf("write JVM fallback truststore: %w", err)
	}
	return nil
}
