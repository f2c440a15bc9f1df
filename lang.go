package main

// Language runtimes and tools: the variables that point each at a trust
// file, and the trust files each keeps inside the image, merged in place
// like the OS store. One table, one row per runtime; a processor of the
// same name enables it.
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
//
// The trust files in the image are found from what the image itself says
// (its PATH, JAVA_HOME and VIRTUAL_ENV) before fixed paths. Every search is
// bounded: in the directories it looks at, the entries it lists (see
// readDir), and the files it keeps; one that reaches a bound stops there
// and says so.

import (
	"bytes"
	"errors"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// trustVar is a variable that points a runtime at a file inside the
// container: containerBundle (replaces) or containerCA (adds).
type trustVar struct{ name, value string }

var (
	// Go's crypto/x509 and OpenSSL (Python's ssl, Ruby, PHP, curl) read it.
	sslCertFile = trustVar{"SSL_CERT_FILE", containerBundle}
)

// langRuntime is a language runtime or tool that cainjekt serves.
type langRuntime struct {
	processor string // lang-NAME or tool-NAME; a distribution's is os-NAME (detect.go)
	vars      []trustVar
	// find lists the trust files the runtime keeps in the image, merged in
	// format; nil: it keeps none of its own.
	find   func(in *injection) ([]string, error)
	format trustFormat
	// finish, if set, runs after the runtime's files were merged.
	finish func(in *injection, changes []fileChange, res *langResult) error
}

var runtimes = []langRuntime{
	{processor: "lang-go", vars: []trustVar{sslCertFile}},
	// requests reads certifi's bundle, not OpenSSL's default; pip its vendored
	// certifi. A pip-installed certifi is merged in place for code that
	// verifies with certifi.where() itself (httpx's default).
	{processor: "lang-python", vars: []trustVar{sslCertFile, {"REQUESTS_CA_BUNDLE", containerBundle}, {"PIP_CERT", containerBundle}},
		find: certifiBundles, format: pemFormat},
	{processor: "lang-ruby", vars: []trustVar{sslCertFile}},
	// gRPC's C core (Python's grpcio, Ruby's grpc, C++) reads its own
	// variable first, else the roots its binding hands it: grpcio's
	// roots.pem, merged in place.
	{processor: "lang-grpc", vars: []trustVar{{"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", containerBundle}},
		find: grpcRoots, format: pemFormat},
	// Node.js and Deno use their compiled-in roots plus these files.
	{processor: "lang-nodejs", vars: []trustVar{{"NODE_EXTRA_CA_CERTS", containerCA}}},
	{processor: "lang-deno", vars: []trustVar{{"DENO_CERT", containerCA}}},
	// A JVM reads no variable: its cacerts is merged in its own format (java.go).
	{processor: "lang-java", find: javaStores, format: javaFormat, finish: javaFallback},
	// The long tail: tools that ignore SSL_CERT_FILE, or read their own variable first.
	{processor: "tool-curl", vars: []trustVar{{"CURL_CA_BUNDLE", containerBundle}}},
	{processor: "tool-git", vars: []trustVar{{"GIT_SSL_CAINFO", containerBundle}}},
	{processor: "tool-aws", vars: []trustVar{{"AWS_CA_BUNDLE", containerBundle}}},
}

// trustVars lists the variables of the enabled runtimes, each once, in the
// table's order.
func trustVars(enabled func(processor string) bool) []trustVar {
	var vars []trustVar
	for _, rt := range runtimes {
		for _, v := range rt.vars {
			if enabled(rt.processor) && !slices.Contains(vars, v) {
				vars = append(vars, v)
			}
		}
	}
	return vars
}

// The hook's part.

// injectionEnvNames are the container's variables the injection reads.
func injectionEnvNames() []string {
	names := []string{"PATH", "VIRTUAL_ENV", "JAVA_HOME", "JAVA_TOOL_OPTIONS"}
	for _, v := range trustVars(func(string) bool { return true }) {
		names = append(names, v.name)
	}
	return names
}

const (
	maxSearchDirs = 32       // PATH entries, prefixes and JVM homes looked at
	maxPythons    = 8        // python3* directories taken from one lib directory
	maxCoreSize   = 64 << 10 // certifi's core.py, which is about 3 KiB
)

// langResult is what the language processors did.
type langResult struct {
	changes []fileChange
	// env and appendEnv go to the wrapper: variables only the hook's
	// findings decide, set for PID 1 and its children.
	env, appendEnv map[string]string
}

// injectLanguages merges ours into the trust files of every enabled
// runtime the image has, and into the files the container's own trust
// variables name.
func (in *injection) injectLanguages() (langResult, error) {
	res := langResult{env: map[string]string{}, appendEnv: map[string]string{}}
	var errs []error
	for _, rt := range runtimes {
		if rt.find == nil || !in.enabled(rt.processor) {
			continue
		}
		files, err := rt.find(in)
		changes, mergeErr := in.mergeAll(files, rt.format)
		res.changes = append(res.changes, changes...)
		errs = append(errs, err, mergeErr)
		if rt.finish != nil {
			errs = append(errs, rt.finish(in, changes, &res))
		}
	}
	changes, err := in.mergeAll(in.ownBundles(), pemFormat)
	res.changes = append(res.changes, changes...)
	return res, errors.Join(append(errs, err)...)
}

// mergeAll merges ours into each file not merged already.
func (in *injection) mergeAll(files []string, f trustFormat) ([]fileChange, error) {
	var changes []fileChange
	var errs []error
	for _, p := range files {
		if in.merged[p] {
			continue
		}
		in.merged[p] = true
		c, err := in.apply(in.read(p, f))
		changes = append(changes, c)
		errs = append(errs, err)
	}
	return changes, errors.Join(errs...)
}

// ownBundles finds the files the container's own trust variables name, for
// the enabled processors: a pod or image that sets SSL_CERT_FILE keeps its
// value, and the file, if the image has it, gets our CAs merged in.
func (in *injection) ownBundles() []string {
	var candidates []string
	for _, v := range trustVars(in.enabled) {
		if own := envValue(in.env, v.name); path.IsAbs(own) && own != v.value {
			candidates = append(candidates, own)
		}
	}
	return uniqueFiles(in.root, candidates)
}

// pythonSites lists the site-packages and dist-packages directories under
// every Python prefix the image has: the parent of each PATH directory
// with a python3, VIRTUAL_ENV, /usr/local and /usr. They are searched once
// for every runtime that keeps trust files there.
func (in *injection) pythonSites() ([]string, error) {
	if in.sites != nil {
		return *in.sites, nil
	}
	var prefixes, sites []string
	if venv := envValue(in.env, "VIRTUAL_ENV"); path.IsAbs(venv) {
		prefixes = append(prefixes, path.Clean(venv))
	}
	for _, dir := range searchPath(envValue(in.env, "PATH")) {
		if isRegular(in.root, dir+"/python3") || isRegular(in.root, dir+"/python") {
			prefixes = append(prefixes, path.Dir(dir))
		}
	}
	var errs []error
	isPython := func(name string) bool { return strings.HasPrefix(name, "python3") }
	for _, prefix := range uniqueDirs(append(prefixes, "/usr/local", "/usr")) {
		libs, err := listDir(in.root, prefix+"/lib", isPython, maxPythons)
		errs = append(errs, err)
		for _, lib := range libs {
			sites = append(sites, path.Join(prefix, "lib", lib, "site-packages"), path.Join(prefix, "lib", lib, "dist-packages"))
		}
	}
	in.sites = &sites
	return sites, errors.Join(errs...)
}

// certifiBundles finds the CA bundles of certifi installs (pip's, and
// pip's own vendored one) in every Python site: requests, httpx and pip
// read them, not the OS store; a certifi patched to return the OS bundle
// is left alone.
func certifiBundles(in *injection) ([]string, error) {
	sites, err := in.pythonSites()
	var candidates []string
	for _, dir := range sites {
		for _, pkg := range []string{dir + "/certifi", dir + "/pip/_vendor/certifi"} {
			if isRegular(in.root, pkg+"/cacert.pem") && certifiUsesItsBundle(in.root, pkg) {
				candidates = append(candidates, pkg+"/cacert.pem")
			}
		}
	}
	return uniqueFiles(in.root, candidates), err
}

// grpcRoots finds the roots.pem grpcio ships in every Python site, which
// it hands gRPC's core when GRPC_DEFAULT_SSL_ROOTS_FILE_PATH names none.
func grpcRoots(in *injection) ([]string, error) {
	sites, err := in.pythonSites()
	var candidates []string
	for _, dir := range sites {
		candidates = append(candidates, dir+"/grpc/_cython/_credentials/roots.pem")
	}
	return uniqueFiles(in.root, candidates), err
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
