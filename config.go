//go:build !hookonly

package main

// The plugin's configuration: each setting is an environment variable (the
// names and defaults existing manifests use) and a flag; a flag wins over the
// variable, the variable over the default. A bad value is a startup error
// that names the setting, never a silent default.

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	policyOptIn  = "opt-in"
	policyOptOut = "opt-out"
	// kubeAPIOff disables namespace lookups.
	kubeAPIOff = "off"

	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// config is the validated configuration of `cainjekt plugin`.
type config struct {
	caFile           string
	baseBundle       string
	annotationPrefix string
	failPolicy       string
	logLevel         slog.Level
	logFormat        string
	hookTimeout      time.Duration
	dynamicCARoot    string
	socket           string
	name             string
	idx              string
	httpAddr         string
	hostBinary       string

	injectionPolicy   string
	excludeNamespaces []string
	excludeContainers []string
	bundlesDir        string
	kubeAPI           string // "" when namespace lookups and pod events are off
	kubeCAFile        string
	kubeTokenFile     string
	nodeName          string // the source host of pod events, "" if unknown
}

// setting describes one configuration value.
type setting struct {
	flag, env, def, usage string
}

var settings = []setting{
	{"ca-file", "CAINJEKT_CA_FILE", "/etc/cainjekt/ca-bundle.pem", "PEM bundle of the CAs to inject"},
	{"base-bundle", "CAINJEKT_BASE_BUNDLE", "", "optional PEM bundle of public roots for images that trust nothing of their own (e.g. the node's)"},
	{"annotation-prefix", "CAINJEKT_ANNOTATION_PREFIX", "cainjekt.natron.io", "prefix of the pod annotations"},
	{"fail-policy", "CAINJEKT_FAIL_POLICY", failOpen, "fail-open: a container whose injection fails starts without it; fail-closed: it does not start"},
	{"log-level", "CAINJEKT_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"log-format", "CAINJEKT_LOG_FORMAT", "json", "json or text"},
	{"hook-timeout", "CAINJEKT_HOOK_TIMEOUT_SEC", "5", "seconds the runtime allows the OCI hook (1-60)"},
	{"dynamic-ca-root", "CAINJEKT_DYNAMIC_CA_ROOT", "/run/cainjekt/containers", "host directory for per-container staging"},
	{"socket", "CAINJEKT_NRI_SOCKET", "/var/run/nri/nri.sock", "NRI socket of the container runtime"},
	{"name", "CAINJEKT_PLUGIN_NAME", "cainjekt", "NRI plugin name"},
	{"idx", "CAINJEKT_PLUGIN_IDX", "10", "NRI plugin index, two digits"},
	{"http-addr", "CAINJEKT_HTTP_ADDR", ":9443", "listen address of /metrics, /healthz and /readyz"},
	{"host-binary", "CAINJEKT_HOST_BINARY", "", "host path of the binary run as the hook and mounted as the wrapper (default: cainjekt-hook beside this executable, else this executable)"},
	{"injection-policy", "CAINJEKT_INJECTION_POLICY", policyOptIn, "opt-in: inject pods (or namespaces) that ask; opt-out: inject every pod that does not say no"},
	{"exclude-namespaces", "CAINJEKT_EXCLUDE_NAMESPACES", "kube-system", "namespaces not injected in opt-out mode unless a pod or the namespace opts in, comma-separated"},
	{"exclude-containers", "CAINJEKT_EXCLUDE_CONTAINERS", "", "container names never injected, in any pod (e.g. istio-proxy), comma-separated"},
	{"bundles-dir", "CAINJEKT_BUNDLES_DIR", "", "directory of named CA bundles (NAME, NAME.pem or NAME.crt) that pods pick with <prefix>/bundle"},
	{"kube-api", "CAINJEKT_KUBE_API", "", "API server for namespace labels and pod events (default: the in-cluster address; \"off\" disables both)"},
	{"kube-ca-file", "CAINJEKT_KUBE_CA_FILE", serviceAccountDir + "/ca.crt", "CA of the API server"},
	{"kube-token-file", "CAINJEKT_KUBE_TOKEN_FILE", serviceAccountDir + "/token", "service account token, re-read for every request"},
	{"node-name", "CAINJEKT_NODE_NAME", "", "the node's name, which the pod events name as their source (the DaemonSet sets it from spec.nodeName)"},
}

// aliases are the names natrontech/cainjekt gives settings, by flag: read
// when the setting's own variable is unset, so its manifests keep working.
var aliases = map[string]string{"host-binary": "CAINJEKT_PLUGIN_BINARY_PATH"}

// loadConfig parses args and the environment into a validated config.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	raw, err := parseSettings(args, getenv, stderr)
	if err != nil {
		return nil, err
	}
	get := raw.get
	c := &config{
		caFile:           get("ca-file", absPath),
		baseBundle:       get("base-bundle", optional(absPath)),
		annotationPrefix: strings.TrimSuffix(get("annotation-prefix", annotationPrefix), "/"),
		failPolicy:       get("fail-policy", oneOf(failOpen, failClosed)),
		logFormat:        get("log-format", oneOf("json", "text")),
		dynamicCARoot:    get("dynamic-ca-root", absPath),
		socket:           get("socket", absPath),
		name:             get("name", pluginName),
		idx:              get("idx", pluginIdx),
		httpAddr:         get("http-addr", listenAddr),
		hostBinary:       get("host-binary", optional(absPath)),
		injectionPolicy:  get("injection-policy", oneOf(policyOptIn, policyOptOut)),
		bundlesDir:       get("bundles-dir", optional(absPath)),
		kubeAPI:          get("kube-api", optional(kubeAPIURL)),
		kubeCAFile:       get("kube-ca-file", absPath),
		kubeTokenFile:    get("kube-token-file", absPath),
		nodeName:         get("node-name", optional(dnsSubdomain)),
	}
	c.excludeNamespaces = splitList(get("exclude-namespaces", nameList("namespace")))
	c.excludeContainers = splitList(get("exclude-containers", nameList("container")))
	switch c.kubeAPI {
	case kubeAPIOff:
		c.kubeAPI = ""
	case "":
		c.kubeAPI = inClusterAPI(getenv)
	}
	c.logLevel = parseLevel(get("log-level", oneOf("debug", "info", "warn", "error")))
	c.hookTimeout = time.Duration(atoiOrZero(get("hook-timeout", intRange(1, 60)))) * time.Second
	if err := errors.Join(raw.errs...); err != nil {
		return nil, err
	}
	c.dynamicCARoot = filepath.Clean(c.dynamicCARoot)
	return c, nil
}

// rawSettings are the settings' values as given, flag over variable over
// default, and the errors of the checks made so far.
type rawSettings struct {
	values   map[string]*string
	fromFlag map[string]bool
	errs     []error
}

func parseSettings(args []string, getenv func(string) string, stderr io.Writer) (*rawSettings, error) {
	fs := flag.NewFlagSet("cainjekt plugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	r := &rawSettings{values: map[string]*string{}, fromFlag: map[string]bool{}}
	for _, s := range settings {
		def := s.def
		if v := cmp.Or(getenv(s.env), getenv(aliases[s.flag])); v != "" {
			def = v
		}
		r.values[s.flag] = fs.String(s.flag, def, fmt.Sprintf("%s (env %s)", s.usage, s.env))
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { r.fromFlag[f.Name] = true })
	return r, nil
}

// get returns a setting's value, noting the error if check refuses it.
func (r *rawSettings) get(name string, check func(string) error) string {
	v := strings.TrimSpace(*r.values[name])
	if err := check(v); err != nil {
		r.errs = append(r.errs, fmt.Errorf("invalid %s %q: %w", sourceOf(name, r.fromFlag[name]), v, err))
	}
	return v
}

func sourceOf(name string, fromFlag bool) string {
	for _, s := range settings {
		if s.flag == name {
			switch {
			case fromFlag:
				return "--" + name
			case aliases[name] != "":
				return s.env + " or " + aliases[name] + " (--" + name + ")"
			}
			return s.env + " (--" + name + ")"
		}
	}
	return name
}

// effective lists every setting as the plugin runs with it, defaults
// resolved, for the start log line: what is in force, not what was typed.
func (c *config) effective() []slog.Attr {
	return []slog.Attr{
		slog.String("ca_file", c.caFile),
		slog.String("base_bundle", c.baseBundle),
		slog.String("bundles_dir", c.bundlesDir),
		slog.String("annotation_prefix", c.annotationPrefix),
		slog.String("fail_policy", c.failPolicy),
		slog.String("injection_policy", c.injectionPolicy),
		slog.String("exclude_namespaces", strings.Join(c.excludeNamespaces, ",")),
		slog.String("exclude_containers", strings.Join(c.excludeContainers, ",")),
		slog.String("hook_timeout", c.hookTimeout.String()),
		slog.String("log_level", c.logLevel.String()),
		slog.String("log_format", c.logFormat),
		slog.String("dynamic_ca_root", c.dynamicCARoot),
		slog.String("socket", c.socket),
		slog.String("name", c.name),
		slog.String("idx", c.idx),
		slog.String("http_addr", c.httpAddr),
		slog.String("host_binary", c.hostBinary),
		slog.String("kube_api", cmp.Or(c.kubeAPI, kubeAPIOff)),
		slog.String("kube_ca_file", c.kubeCAFile),
		slog.String("kube_token_file", c.kubeTokenFile),
		slog.String("node_name", c.nodeName),
	}
}

// unknownVariable is a CAINJEKT_* variable that is no setting, and the
// setting it most likely meant ("" if none is close).
type unknownVariable struct{ name, closest string }

// advice is what the plugin's log and doctor tell the operator of it.
func (v unknownVariable) advice() string {
	if v.closest != "" {
		return "no setting reads it; did you mean " + v.closest + "?"
	}
	return "no setting reads it; cainjekt plugin -h lists the settings"
}

// unknownVariables finds the CAINJEKT_* variables of environ that no setting
// reads: a misspelt one (CAINJEKT_FAILPOLICY) would leave its default in
// force without a word. The variables Kubernetes makes of a Service named
// cainjekt-… in the pod's namespace are no mistake, and not reported.
func unknownVariables(environ []string) []unknownVariable {
	names := map[string]bool{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		names[name] = true
	}
	var known []string
	for _, s := range settings {
		known = append(known, s.env)
	}
	for _, alias := range aliases {
		known = append(known, alias)
	}
	var out []unknownVariable
	for name := range names {
		if !strings.HasPrefix(strings.ToUpper(name), "CAINJEKT_") || slices.Contains(known, name) || serviceLink(name, names) {
			continue
		}
		out = append(out, unknownVariable{name, closestOf(strings.ToUpper(name), known)})
	}
	slices.SortFunc(out, func(a, b unknownVariable) int { return strings.Compare(a.name, b.name) })
	return out
}

// serviceLink reports whether name is one of the variables the kubelet
// sets for a Service: SVC_SERVICE_HOST, SVC_SERVICE_PORT[_NAME] and
// SVC_PORT[_…], always with SVC_SERVICE_HOST beside them.
func serviceLink(name string, environ map[string]bool) bool {
	for i := range len(name) {
		if name[i] != '_' || !environ[name[:i]+"_SERVICE_HOST"] {
			continue
		}
		if rest := name[i:]; strings.HasPrefix(rest, "_SERVICE_") || strings.HasPrefix(rest, "_PORT") {
			return true
		}
	}
	return false
}

// closestOf is the candidate fewest edits from name, if it is close enough
// to be a typo of it: a few edits, fewer the shorter the name.
func closestOf(name string, candidates []string) string {
	best, bestDistance := "", max(2, len(name)/5)+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDistance {
			best, bestDistance = c, d
		}
	}
	return best
}

func absPath(v string) error {
	switch {
	case v == "":
		return errors.New("must not be empty")
	case !filepath.IsAbs(v):
		return errors.New("must be an absolute path")
	case strings.ContainsRune(v, 0):
		return errors.New("contains a NUL byte")
	}
	return nil
}

func optional(check func(string) error) func(string) error {
	return func(v string) error {
		if v == "" {
			return nil
		}
		return check(v)
	}
}

func oneOf(allowed ...string) func(string) error {
	return func(v string) error {
		if slices.Contains(allowed, v) {
			return nil
		}
		return fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
	}
}

func intRange(lo, hi int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("must be a whole number from %d to %d", lo, hi)
		}
		return nil
	}
}

func atoiOrZero(v string) int {
	n, _ := strconv.Atoi(v)
	return n
}

// annotationPrefix checks a Kubernetes annotation prefix: a DNS subdomain,
// with or without the '/' that joins it to the name.
func annotationPrefix(v string) error { return dnsSubdomain(strings.TrimSuffix(v, "/")) }

// dnsSubdomain checks a node name, or an annotation prefix.
func dnsSubdomain(v string) error {
	if v == "" || len(v) > 253 {
		return errors.New("must be a DNS subdomain of 1 to 253 characters")
	}
	for _, label := range strings.Split(v, ".") {
		if !dnsLabel(label) {
			return fmt.Errorf("label %q is not a lower-case DNS label", label)
		}
	}
	return nil
}

func dnsLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// pluginName checks an NRI plugin name: the runtime joins it with the index
// as "IDX-NAME" and uses it in file names.
func pluginName(v string) error {
	if !dnsLabel(v) {
		return errors.New("must be 1 to 63 lower-case letters, digits or '-'")
	}
	return nil
}

func pluginIdx(v string) error {
	if len(v) != 2 || v[0] < '0' || v[0] > '9' || v[1] < '0' || v[1] > '9' {
		return errors.New("must be two digits, 00 to 99")
	}
	return nil
}

func kubeAPIURL(v string) error {
	if v == kubeAPIOff || strings.HasPrefix(v, "https://") && len(v) > len("https://") {
		return nil
	}
	return errors.New(`must be an https:// URL or "off"`)
}

// nameList checks a comma-separated list of Kubernetes names of a kind
// that are DNS labels: namespaces, containers.
func nameList(kind string) func(string) error {
	return func(v string) error {
		for _, name := range splitList(v) {
			if !dnsLabel(name) {
				return fmt.Errorf("%q is not a %s name", name, kind)
			}
		}
		return nil
	}
}

func listenAddr(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

// hookBinaryName is the binary built with -tags hookonly: the hook and the
// wrapper without the plugin's dependencies.
const hookBinaryName = "cainjekt-hook"

// defaultHookBinary is the hook binary beside this executable if there is
// one, else this executable, which can serve as hook and wrapper too, only
// slower to start.
func defaultHookBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this executable: %w", err)
	}
	if sibling := filepath.Join(filepath.Dir(exe), hookBinaryName); isExecutable(sibling) {
		return sibling, nil
	}
	return exe, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// resolveHostBinary defaults the host binary and checks that it is there:
// the runtime executes it as the hook and bind-mounts it as the wrapper, so
// a wrong path breaks every injected container.
func (c *config) resolveHostBinary() error {
	if c.hostBinary == "" {
		exe, err := defaultHookBinary()
		if err != nil {
			return fmt.Errorf("--host-binary: %w", err)
		}
		c.hostBinary = exe
	}
	if !isExecutable(c.hostBinary) {
		return fmt.Errorf("host binary (CAINJEKT_HOST_BINARY) %s is missing or not an executable file", c.hostBinary)
	}
	return nil
}

// inClusterAPI is the API server's address as the kubelet tells every pod.
func inClusterAPI(getenv func(string) string) string {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "https://" + host + ":" + port
}

// readHostFile reads a regular file of the operator's, bounded in size.
// Symlinks are followed: a ConfigMap volume is made of them.
func readHostFile(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", p, errNotRegular)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(data) > maxBundleSize {
		return nil, fmt.Errorf("%s: %w (limit %d bytes)", p, errTooLarge, maxBundleSize)
	}
	return data, nil
}
