// Package deploytest renders every kustomization under deploy/ with the
// real kubectl and checks what a cluster would get: the DaemonSet's mounts,
// probes and privileges, and that the paths the plugin is told match the
// host paths mounted for them, since the plugin hands those paths to runc on
// the node; that every object lands in the cainjekt namespace; that the
// ServiceMonitor scrapes the metrics Service. The alerts go through promtool,
// its checks and the tests beside the PrometheusRule, and each has a runbook
// in docs/operations.md.
package deploytest

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"sigs.k8s.io/yaml"
)

const deployDir = "../../deploy"

// object is a rendered manifest, decoded loosely.
type object = map[string]any

// get walks maps by key.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, keys ...string) string {
	s, _ := get(v, keys...).(string)
	return s
}

func list(v any, keys ...string) []any {
	l, _ := get(v, keys...).([]any)
	return l
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CAINJEKT_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not installed", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// render runs kubectl kustomize (or kustomize build, which it embeds) on dir.
func render(t *testing.T, dir string) []object {
	t.Helper()
	cmd := exec.Command("kubectl", "kustomize", dir)
	if _, err := exec.LookPath("kubectl"); err != nil {
		cmd = exec.Command(requireTool(t, "kustomize"), "build", dir)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	var objs []object
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

// kustomizations finds every directory under deploy/ a user may apply: each
// kustomization.yaml but the Components, which only overlays include.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	filepath.WalkDir(deployDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.Name() != "kustomization.yaml" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var k object
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if str(k, "kind") != "Component" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return nil
	})
	if len(dirs) < 3 {
		t.Fatalf("found only %v", dirs)
	}
	return dirs
}

func find(objs []object, kind, name string) object {
	for _, o := range objs {
		if str(o, "kind") == kind && (name == "" || str(o, "metadata", "name") == name) {
			return o
		}
	}
	return nil
}

func TestEveryKustomizationRenders(t *testing.T) {
	for _, dir := range kustomizations(t) {
		t.Run(cmp.Or(strings.TrimPrefix(strings.TrimPrefix(dir, deployDir), "/"), "deploy"), func(t *testing.T) {
			objs := render(t, dir)
			ds := find(objs, "DaemonSet", "cainjekt")
			if ds == nil {
				t.Fatal("no DaemonSet")
			}
			checkDaemonSet(t, ds)
			checkNamespaceAndRBAC(t, objs, str(ds, "metadata", "namespace"))
			checkPriorityClassQuota(t, objs, ds)
			checkObjectNamespaces(t, objs)
		})
	}
}

// hostMount is a hostPath volume as one container mounts it.
type hostMount struct {
	hostPath, mountPath string
	readOnly            bool
}

func checkDaemonSet(t *testing.T, ds object) {
	spec := get(ds, "spec", "template", "spec")
	if str(spec, "priorityClassName") != "system-node-critical" {
		t.Error("not system-node-critical")
	}
	if tol := list(spec, "tolerations"); len(tol) != 1 || str(tol[0], "operator") != "Exists" {
		t.Errorf("tolerations %v: the plugin must run on every node", tol)
	}
	if v := get(ds, "spec", "updateStrategy", "rollingUpdate", "maxSurge"); v != 0.0 && v != "0" {
		t.Errorf("maxSurge %v: two plugins must never share a node", v)
	}
	if get(spec, "hostNetwork") == true || get(spec, "hostPID") == true {
		t.Error("host network or PID namespace: not needed")
	}
	volumes := map[string]any{}
	for _, v := range list(spec, "volumes") {
		volumes[str(v, "name")] = v
	}
	containers := append(list(spec, "initContainers"), list(spec, "containers")...)
	var plugin any
	for _, c := range containers {
		checkContainerSecurity(t, c)
		if str(c, "name") == "plugin" {
			plugin = c
		}
	}
	if plugin == nil {
		t.Fatal("no plugin container")
	}
	env := map[string]string{}
	for _, e := range list(plugin, "env") {
		if _, dup := env[str(e, "name")]; dup {
			t.Errorf("env %s set twice", str(e, "name"))
		}
		env[str(e, "name")] = cmp.Or(str(e, "value"), str(e, "valueFrom", "fieldRef", "fieldPath"))
	}
	// The pod events name the node they come from.
	if env["CAINJEKT_NODE_NAME"] != "spec.nodeName" {
		t.Errorf("CAINJEKT_NODE_NAME %q, want the downward API's spec.nodeName", env["CAINJEKT_NODE_NAME"])
	}
	mounts := hostMounts(t, plugin, volumes)

	// Paths runc uses on the host must be the same in the pod.
	for _, v := range []string{"CAINJEKT_HOST_BINARY", "CAINJEKT_DYNAMIC_CA_ROOT", "CAINJEKT_NRI_SOCKET"} {
		m, ok := mountOf(mounts, env[v])
		switch {
		case !ok:
			t.Errorf("%s=%s is on no hostPath mount", v, env[v])
		case m.hostPath != m.mountPath:
			t.Errorf("%s: hostPath %s is mounted at %s; runc on the host needs the same path", v, m.hostPath, m.mountPath)
		}
	}
	if m, _ := mountOf(mounts, env["CAINJEKT_DYNAMIC_CA_ROOT"]); m.readOnly {
		t.Error("the dynamic CA root is mounted read-only")
	}
	if m, _ := mountOf(mounts, env["CAINJEKT_NRI_SOCKET"]); m.mountPath == env["CAINJEKT_NRI_SOCKET"] {
		t.Error("the NRI socket file itself is mounted: after a containerd restart the plugin could not reconnect; mount its directory")
	}
	checkConfigMapPath(t, plugin, volumes, env["CAINJEKT_CA_FILE"], true)
	checkConfigMapPath(t, plugin, volumes, env["CAINJEKT_BUNDLES_DIR"], false)

	// The installer writes where the plugin tells runc to look.
	var installed string
	for _, c := range list(spec, "initContainers") {
		args := list(c, "args")
		for i, a := range args {
			if a == "--dest" && i+1 < len(args) {
				installed = args[i+1].(string)
				if m, ok := mountOf(hostMounts(t, c, volumes), installed); !ok || m.readOnly || m.hostPath != m.mountPath {
					t.Errorf("the installer writes %s through %+v", installed, m)
				}
			}
		}
	}
	if installed != env["CAINJEKT_HOST_BINARY"] {
		t.Errorf("the installer writes %q, the plugin runs %q", installed, env["CAINJEKT_HOST_BINARY"])
	}

	_, port, err := net.SplitHostPort(env["CAINJEKT_HTTP_ADDR"])
	if err != nil || port == "" {
		t.Fatalf("CAINJEKT_HTTP_ADDR %q names no port (%v): the probes cannot be checked", env["CAINJEKT_HTTP_ADDR"], err)
	}
	ports := map[string]string{}
	for _, p := range list(plugin, "ports") {
		ports[str(p, "name")] = fmt.Sprint(get(p, "containerPort"))
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := str(plugin, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %q, want %q", probe, got, path)
		}
		if p := str(plugin, probe, "httpGet", "port"); ports[p] != port {
			t.Errorf("%s port %q (%s), the plugin listens on %s", probe, p, ports[p], port)
		}
	}
	if str(plugin, "resources", "limits", "memory") == "" || str(plugin, "resources", "requests", "cpu") == "" {
		t.Error("the plugin has no requests and limits")
	}
}

func checkContainerSecurity(t *testing.T, c any) {
	sc := get(c, "securityContext")
	name := str(c, "name")
	if get(sc, "privileged") == true || get(sc, "allowPrivilegeEscalation") != false || get(sc, "readOnlyRootFilesystem") != true {
		t.Errorf("%s: securityContext %v", name, sc)
	}
	if drop := list(sc, "capabilities", "drop"); !slices.Contains(drop, any("ALL")) || len(list(sc, "capabilities", "add")) > 0 {
		t.Errorf("%s: capabilities %v: all must be dropped, none added", name, get(sc, "capabilities"))
	}
}

func hostMounts(t *testing.T, c any, volumes map[string]any) []hostMount {
	var out []hostMount
	for _, m := range list(c, "volumeMounts") {
		v, ok := volumes[str(m, "name")]
		if !ok {
			t.Errorf("%s mounts undeclared volume %s", str(c, "name"), str(m, "name"))
			continue
		}
		if hp := str(v, "hostPath", "path"); hp != "" {
			out = append(out, hostMount{hostPath: hp, mountPath: str(m, "mountPath"), readOnly: get(m, "readOnly") == true})
		}
	}
	return out
}

// mountOf finds the mount a path lives under.
func mountOf(mounts []hostMount, p string) (hostMount, bool) {
	for _, m := range mounts {
		if p == m.mountPath || strings.HasPrefix(p, m.mountPath+"/") {
			return m, true
		}
	}
	return hostMount{}, false
}

// checkConfigMapPath checks that a configured path is in a ConfigMap volume
// (as a file, or as the mount itself).
func checkConfigMapPath(t *testing.T, c any, volumes map[string]any, p string, file bool) {
	for _, m := range list(c, "volumeMounts") {
		mp := str(m, "mountPath")
		if (file && path.Dir(p) == mp) || (!file && p == mp) {
			if str(volumes[str(m, "name")], "configMap", "name") == "" {
				t.Errorf("%s is not on a ConfigMap volume", p)
			}
			return
		}
	}
	t.Errorf("%s is on no mount", p)
}

func checkNamespaceAndRBAC(t *testing.T, objs []object, ns string) {
	n := find(objs, "Namespace", ns)
	if n == nil || str(n, "metadata", "labels", "pod-security.kubernetes.io/enforce") != "privileged" {
		t.Errorf("namespace %s missing or without the PSA label the plugin needs", ns)
	}
	// get on namespaces (their opt-in and bundle), create on events (the
	// pods'), both of the core group, is all the plugin needs: no list, no
	// patch of events it did not write, nothing else.
	want := []string{`[""] [namespaces] [get] []`, `[""] [events] [create] []`}
	var rules []string
	for _, r := range list(find(objs, "ClusterRole", ""), "rules") {
		rules = append(rules, fmt.Sprintf("%q %v %v %v", list(r, "apiGroups"), list(r, "resources"), list(r, "verbs"), list(r, "resourceNames")))
		if len(r.(map[string]any)) != 3 {
			t.Errorf("ClusterRole rule %v: only apiGroups, resources and verbs", r)
		}
	}
	if !slices.Equal(rules, want) {
		t.Errorf("ClusterRole rules\n%s\nwant\n%s", strings.Join(rules, "\n"), strings.Join(want, "\n"))
	}
}

// maxNodes is the most nodes a cluster has: GKE's limit, 65,000
// (Kubernetes supports 5,000). One plugin pod runs per node.
const maxNodes = 65000

// checkPriorityClassQuota checks that a ResourceQuota admits the
// DaemonSet's pods where their priority class is limited (GKE limits
// system-node-critical to namespaces with a quota scoped to it): in the
// DaemonSet's namespace, scoped to its class and nothing narrower, limiting
// the count of pods only, to no fewer than one per node of the largest
// clusters.
func checkPriorityClassQuota(t *testing.T, objs []object, ds object) {
	class := str(ds, "spec", "template", "spec", "priorityClassName")
	for _, q := range objs {
		if str(q, "kind") != "ResourceQuota" || str(q, "metadata", "namespace") != str(ds, "metadata", "namespace") {
			continue
		}
		exprs := list(q, "spec", "scopeSelector", "matchExpressions")
		if len(exprs) != 1 || str(exprs[0], "scopeName") != "PriorityClass" || str(exprs[0], "operator") != "In" ||
			!slices.Contains(list(exprs[0], "values"), any(class)) || get(q, "spec", "scopes") != nil {
			continue
		}
		hard, _ := get(q, "spec", "hard").(map[string]any)
		pods, err := strconv.Atoi(fmt.Sprint(hard["pods"]))
		if len(hard) != 1 || err != nil || pods < maxNodes {
			t.Errorf("ResourceQuota %s limits %v: it must limit pods alone, to at least %d", str(q, "metadata", "name"), hard, maxNodes)
		}
		return
	}
	t.Errorf("no ResourceQuota in namespace %s is scoped to the priority class %s: clusters that limit it (GKE) refuse the DaemonSet's pods", str(ds, "metadata", "namespace"), class)
}

// namespace is where every namespaced object of deploy/ belongs: the RBAC
// binding, the Kyverno policy and docs/operations.md all name it.
const namespace = "cainjekt"

// clusterScoped are the kinds that have no namespace. Any other kind is
// taken as namespaced, so a cluster-scoped kind added to deploy/ fails below
// until it is listed here, rather than passing with a namespace it must not have.
var clusterScoped = []string{
	"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "CustomResourceDefinition",
	"StorageClass", "RuntimeClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterPolicy",
}

// checkObjectNamespaces checks that everything applied lands in the cainjekt
// namespace: kubectl puts an object without one in the current context's
// namespace, where the ServiceMonitor finds no Service and the
// PrometheusRule may not be loaded.
func checkObjectNamespaces(t *testing.T, objs []object) {
	for _, o := range objs {
		kind, name, ns := str(o, "kind"), str(o, "metadata", "name"), str(o, "metadata", "namespace")
		switch {
		case slices.Contains(clusterScoped, kind) && ns != "":
			t.Errorf("%s %s is cluster-scoped but has namespace %q", kind, name, ns)
		case !slices.Contains(clusterScoped, kind) && ns != namespace:
			t.Errorf("%s %s is in namespace %q, not %s", kind, name, ns, namespace)
		}
	}
}

// metricsService is the Service in front of every plugin's /metrics.
const metricsService = "cainjekt-metrics"

// The ServiceMonitor selects the metrics Service, scrapes a port it has, and
// labels every target with its node, which the alerts name.
func TestServiceMonitorScrapesTheMetricsService(t *testing.T) {
	objs := render(t, filepath.Join(deployDir, "overlays/monitoring"))
	sm, svc := find(objs, "ServiceMonitor", "cainjekt"), find(objs, "Service", metricsService)
	if sm == nil || svc == nil {
		t.Fatalf("the monitoring overlay lacks the ServiceMonitor or the Service %s", metricsService)
	}

	// Without a namespaceSelector the Prometheus Operator looks for Services
	// in the ServiceMonitor's own namespace only.
	if get(sm, "spec", "namespaceSelector") != nil {
		t.Errorf("namespaceSelector %v: the ServiceMonitor belongs next to its Service", get(sm, "spec", "namespaceSelector"))
	}
	if str(sm, "metadata", "namespace") != str(svc, "metadata", "namespace") {
		t.Errorf("the ServiceMonitor is in namespace %q, the Service in %q", str(sm, "metadata", "namespace"), str(svc, "metadata", "namespace"))
	}
	if get(sm, "spec", "selector", "matchExpressions") != nil {
		t.Error("selector.matchExpressions: not checked here; select by matchLabels")
	}
	selector, _ := get(sm, "spec", "selector", "matchLabels").(map[string]any)
	if len(selector) == 0 {
		t.Error("the ServiceMonitor selects every Service of the namespace")
	}
	for k, v := range selector {
		if got := str(svc, "metadata", "labels", k); got != v {
			t.Errorf("the ServiceMonitor selects %s=%v, the Service has %s=%q", k, v, k, got)
		}
	}

	servicePorts := map[string]any{}
	for _, p := range list(svc, "spec", "ports") {
		servicePorts[str(p, "name")] = p
	}
	endpoints := list(sm, "spec", "endpoints")
	if len(endpoints) == 0 {
		t.Error("the ServiceMonitor has no endpoints")
	}
	for _, e := range endpoints {
		p, ok := servicePorts[str(e, "port")]
		if !ok {
			t.Errorf("endpoint port %q is not a port of the Service (%v)", str(e, "port"), slices.Collect(maps.Keys(servicePorts)))
			continue
		}
		if str(e, "path") != "/metrics" {
			t.Errorf("endpoint path %q, the plugin serves /metrics", str(e, "path"))
		}
		checkTargetPort(t, objs, str(p, "targetPort"))

		var node bool
		for _, r := range list(e, "relabelings") {
			if str(r, "targetLabel") == "pod" || str(r, "action") == "labeldrop" || str(r, "action") == "labelkeep" {
				t.Errorf("relabeling %v: the pod label must stay", r)
			}
			if slices.Equal(list(r, "sourceLabels"), []any{"__meta_kubernetes_pod_node_name"}) &&
				str(r, "targetLabel") == "node" && cmp.Or(str(r, "action"), "replace") == "replace" {
				node = true
			}
		}
		if !node {
			t.Errorf("endpoint %q does not copy __meta_kubernetes_pod_node_name to the label node", str(e, "port"))
		}
	}
}

// checkTargetPort checks that the Service's target port is the plugin's
// named container port.
func checkTargetPort(t *testing.T, objs []object, targetPort string) {
	ds := find(objs, "DaemonSet", "cainjekt")
	for _, c := range list(ds, "spec", "template", "spec", "containers") {
		for _, p := range list(c, "ports") {
			if str(p, "name") == targetPort {
				return
			}
		}
	}
	t.Errorf("the Service's targetPort %q is no named port of the DaemonSet's containers", targetPort)
}

// alerts renders the monitoring overlay and returns it with the
// PrometheusRule's alerting rules, and those rules' groups as a plain
// Prometheus rules file, rules.yaml in dir, which promtool reads.
func alerts(t *testing.T, dir string) (objs []object, rules []any, rulesFile string) {
	t.Helper()
	objs = render(t, filepath.Join(deployDir, "overlays/monitoring"))
	rule := find(objs, "PrometheusRule", "cainjekt")
	if rule == nil {
		t.Fatal("the monitoring overlay lacks the PrometheusRule")
	}
	groups, err := yaml.Marshal(map[string]any{"groups": get(rule, "spec", "groups")})
	if err != nil {
		t.Fatal(err)
	}
	rulesFile = filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, groups, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, g := range list(rule, "spec", "groups") {
		rules = append(rules, list(g, "rules")...)
	}
	if len(rules) == 0 {
		t.Fatal("the PrometheusRule has no rules")
	}
	return objs, rules, rulesFile
}

// matchers finds the values an expression's selectors give a label, by
// equality or regular expression.
func matchers(expr, label string) []string {
	var values []string
	for _, m := range regexp.MustCompile(`\b`+label+`\s*=~?\s*"([^"]*)"`).FindAllStringSubmatch(expr, -1) {
		values = append(values, m[1])
	}
	return values
}

// The alerts are valid Prometheus rules, use metrics the plugin exports and
// select the series of this deployment.
func TestAlertRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	objs, rules, rulesFile := alerts(t, t.TempDir())
	if out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	metrics, err := os.ReadFile("../../metrics.go")
	if err != nil {
		t.Fatal(err)
	}

	// The Prometheus Operator sets job to the Service's name, or to the value
	// of the Service's label that jobLabel names.
	sm, svc, ds := find(objs, "ServiceMonitor", "cainjekt"), find(objs, "Service", metricsService), find(objs, "DaemonSet", "cainjekt")
	if sm == nil || svc == nil || ds == nil {
		t.Fatal("the monitoring overlay lacks the ServiceMonitor, the metrics Service or the DaemonSet")
	}
	job := str(svc, "metadata", "name")
	if l := str(sm, "spec", "jobLabel"); l != "" {
		job = str(svc, "metadata", "labels", l)
	}
	want := map[string]string{"job": job, "namespace": str(ds, "metadata", "namespace"), "daemonset": str(ds, "metadata", "name")}

	for _, r := range rules {
		name, expr := str(r, "alert"), str(r, "expr")
		if name == "" {
			t.Errorf("recording rule %s: only alerts are checked and tested", str(r, "record"))
			continue
		}
		for _, word := range strings.FieldsFunc(expr, func(c rune) bool {
			return !(c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9')
		}) {
			if strings.HasPrefix(word, "cainjekt_") && !bytes.Contains(metrics, []byte(`"`+word+`"`)) {
				t.Errorf("alert %s uses %s, which the plugin does not export", name, word)
			}
		}
		for label, value := range want {
			for _, v := range matchers(expr, label) {
				if v != value {
					t.Errorf("alert %s selects %s=%q; this deployment's is %q", name, label, v, value)
				}
			}
		}
		// A for: keeps an alert from firing on one evaluation's blip.
		if str(r, "for") == "" {
			t.Errorf("alert %s has no for", name)
		}
		if sev := str(r, "labels", "severity"); !slices.Contains([]string{"critical", "warning", "info"}, sev) {
			t.Errorf("alert %s has severity %q", name, sev)
		}
	}
}

// clusterWide are the alerts about the cluster rather than a node; every
// other one names the node it fires for.
var clusterWide = map[string]string{
	"CainjektDaemonSetUnavailable":      "kube-state-metrics counts the DaemonSet's unavailable pods; the status names no node",
	"CainjektCACertificateExpiringSoon": "every node injects the same bundles: one alert per certificate",
}

// promtool's tests of the alerts pass: each alert fires when it should,
// with the labels and annotations it should have, and stays quiet when it
// should not. The tests cover every alert both ways, and each one that names
// a node is expected to fire with a node label at least once.
func TestAlertRulesPromtoolTests(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := t.TempDir()
	_, rules, _ := alerts(t, dir)
	testData, err := os.ReadFile(filepath.Join(deployDir, "components/prometheusrule/prometheusrule_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	testFile := filepath.Join(dir, "prometheusrule_test.yaml")
	if err := os.WriteFile(testFile, testData, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "test", "rules", filepath.Base(testFile))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}

	var tests object
	if err := yaml.Unmarshal(testData, &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	withNode := map[string]bool{}
	for _, tc := range list(tests, "tests") {
		for _, at := range list(tc, "alert_rule_test") {
			name := str(at, "alertname")
			expected := list(at, "exp_alerts")
			if len(expected) == 0 {
				quiet[name]++
			}
			for _, a := range expected {
				fires[name]++
				if str(a, "exp_labels", "node") != "" {
					withNode[name] = true
				}
			}
		}
	}
	for _, r := range rules {
		name := str(r, "alert")
		if fires[name] == 0 || quiet[name] == 0 {
			t.Errorf("alert %s: promtool tests it firing %d times and quiet %d times; it needs both", name, fires[name], quiet[name])
		}
		names := strings.Contains(str(r, "annotations", "summary"), "$labels.node")
		why, wide := clusterWide[name]
		switch {
		case !wide && !names:
			t.Errorf("alert %s: its summary does not name {{ $labels.node }}", name)
		case !wide && !withNode[name]:
			t.Errorf("alert %s is never expected to fire with a node label", name)
		case wide && names:
			t.Errorf("alert %s names a node, but is listed as cluster-wide: %s", name, why)
		}
	}
}

// docs/operations.md's overlay for kube-prometheus-stack, as written, gives
// the ServiceMonitor and the PrometheusRule the label Prometheus selects.
func TestMonitoringDocOverlay(t *testing.T) {
	objs, _ := renderDocOverlay(t, "Monitoring")
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
		if got := str(find(objs, kind, "cainjekt"), "metadata", "labels", "release"); got != "kube-prometheus-stack" {
			t.Errorf("%s has release=%q", kind, got)
		}
	}
}

// docs/operations.md's overlay for clusters with nodes without NRI, as
// written, keeps the DaemonSet to the nodes its `kubectl label` command
// labels, and changes nothing else the DaemonSet needs.
func TestNodesWithoutNRIDocOverlay(t *testing.T) {
	objs, section := renderDocOverlay(t, "Nodes without NRI")
	ds := find(objs, "DaemonSet", "cainjekt")
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	checkDaemonSet(t, ds)
	m := regexp.MustCompile(`kubectl label node NODE (\S+)=(\S+)`).FindStringSubmatch(section)
	if m == nil {
		t.Fatal("the section labels no node")
	}
	terms := list(ds, "spec", "template", "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")
	var exprs []any
	for _, term := range terms {
		exprs = append(exprs, list(term, "matchExpressions")...)
	}
	if len(terms) != 1 || len(exprs) != 1 || str(exprs[0], "key") != m[1] || str(exprs[0], "operator") != "In" ||
		!slices.Equal(list(exprs[0], "values"), []any{m[2]}) {
		t.Errorf("the DaemonSet's required node affinity is %v, want the label %s=%s", terms, m[1], m[2])
	}
	if str(ds, "spec", "template", "spec", "nodeSelector", "kubernetes.io/os") != "linux" {
		t.Error("the overlay lost the DaemonSet's nodeSelector")
	}
}

// renderDocOverlay renders the first yaml block of a section of
// docs/operations.md as a kustomization next to a checkout of cainjekt, as
// the docs place it, and returns the objects and the section. Everything it
// renders must land in the cainjekt namespace.
func renderDocOverlay(t *testing.T, heading string) ([]object, string) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, found := strings.Cut(string(doc), "\n## "+heading+"\n")
	if !found {
		_, section, found = strings.Cut(string(doc), "\n### "+heading+"\n")
	}
	_, block, ok := strings.Cut(section, "```yaml\n")
	block, _, closed := strings.Cut(block, "```")
	if !found || !ok || !closed {
		t.Fatalf("docs/operations.md has no section %q with a yaml block", heading)
	}
	dir := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(root, filepath.Join(dir, "cainjekt")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := render(t, dir)
	checkObjectNamespaces(t, objs)
	return objs, section
}

// runbookBase is where each alert's runbook_url points: docs/operations.md
// as GitHub shows it, at a heading "Alert: NAME" of its own.
const runbookBase = "https://github.com/cainjekt/cainjekt/blob/main/docs/operations.md"

// Every alert's runbook_url leads to its own heading in docs/operations.md.
func TestAlertRunbooks(t *testing.T) {
	_, rules, _ := alerts(t, t.TempDir())
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	fenced := false
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if !fenced && strings.HasPrefix(line, "#") {
			anchors[githubAnchor(strings.TrimLeft(line, "# "))] = true
		}
	}
	for _, r := range rules {
		name := str(r, "alert")
		want := runbookBase + "#" + githubAnchor("Alert: "+name)
		if got := str(r, "annotations", "runbook_url"); got != want {
			t.Errorf("alert %s: runbook_url %q, want %q", name, got, want)
		}
		if !anchors[githubAnchor("Alert: "+name)] {
			t.Errorf("alert %s: docs/operations.md has no heading \"Alert: %s\"", name, name)
		}
	}
}

// githubAnchor is the fragment GitHub gives a Markdown heading: lower case,
// spaces as hyphens, other punctuation dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case c == ' ':
			b.WriteRune('-')
		case c == '-' || c == '_' || unicode.IsLetter(c) || unicode.IsDigit(c):
			b.WriteRune(c)
		}
	}
	return b.String()
}

// The Kyverno policy keeps other pods off every host path the DaemonSet
// mounts, and spares the namespace the DaemonSet runs in.
func TestKyvernoPolicyCoversTheDaemonSet(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, "policies/kyverno-restrict-host-paths.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var policy object
	if err := yaml.Unmarshal(data, &policy); err != nil {
		t.Fatal(err)
	}
	objs := render(t, deployDir)
	ds := find(objs, "DaemonSet", "cainjekt")
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	rule := list(policy, "spec", "rules")[0]
	if ns := list(rule, "exclude", "any")[0]; !slices.Contains(list(ns, "resources", "namespaces"), any(str(ds, "metadata", "namespace"))) {
		t.Errorf("the policy does not spare the DaemonSet's namespace %s", str(ds, "metadata", "namespace"))
	}
	var patterns []string
	for _, p := range list(list(rule, "validate", "deny", "conditions", "any")[0], "value") {
		patterns = append(patterns, p.(string))
	}
	hostPaths := 0
	for _, v := range list(ds, "spec", "template", "spec", "volumes") {
		hp := str(v, "hostPath", "path")
		if hp == "" {
			continue
		}
		hostPaths++
		covered := false
		for _, p := range patterns {
			if ok, _ := path.Match(p, hp); ok || strings.HasSuffix(p, "*") && strings.HasPrefix(hp, strings.TrimSuffix(p, "*")) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("host path %s is not denied to other pods by the policy", hp)
		}
	}
	if hostPaths == 0 {
		t.Error("the DaemonSet mounts no host path: nothing was checked")
	}
}
