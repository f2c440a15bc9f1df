package deploytest

import (
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docs/migrating.md's Manifests table says what natrontech/cainjekt's users
// find in cainjekt's deploy/: it must say what deploy/ renders.
func TestMigratingManifests(t *testing.T) {
	doc, err := os.ReadFile("../../docs/migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Manifests\n")
	if !ok {
		t.Fatal("docs/migrating.md has no Manifests section")
	}
	objs := render(t, deployDir)
	ds := find(objs, "DaemonSet", "cainjekt")
	plugin := list(ds, "spec", "template", "spec", "containers")[0]
	env := map[string]string{}
	for _, e := range list(plugin, "env") {
		env[str(e, "name")] = str(e, "value")
	}
	var configMaps []string
	for _, v := range list(ds, "spec", "template", "spec", "volumes") {
		configMaps = append(configMaps, str(v, "configMap", "name"))
	}
	var metricsPort string
	for _, p := range list(plugin, "ports") {
		if str(p, "name") == "metrics" {
			metricsPort = strconv.Itoa(int(get(p, "containerPort").(float64)))
		}
	}
	actual := map[string]func(string) bool{
		"namespace":    func(v string) bool { return str(ds, "metadata", "namespace") == v },
		"CA ConfigMap": func(v string) bool { return slices.Contains(configMaps, v) },
		"its key":      func(v string) bool { return path.Base(env["CAINJEKT_CA_FILE"]) == v },
		"images":       func(v string) bool { return strings.HasPrefix(str(plugin, "image"), v+":") },
		"hook binary on the node": func(v string) bool {
			return env["CAINJEKT_HOST_BINARY"] == v
		},
		"ClusterRole, ClusterRoleBinding": func(v string) bool {
			return find(objs, "ClusterRole", v) != nil && find(objs, "ClusterRoleBinding", v) != nil
		},
		"metrics port": func(v string) bool { return metricsPort == v },
	}
	code := regexp.MustCompile("`([^`]*)`")
	checked := 0
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if !strings.HasPrefix(line, "| ") || len(cells) != 3 {
			continue
		}
		what := strings.TrimSpace(cells[0])
		check, ok := actual[what]
		m := code.FindStringSubmatch(cells[2])
		if !ok || m == nil {
			continue
		}
		checked++
		if !check(m[1]) {
			t.Errorf("docs/migrating.md says cainjekt's %s is %q; deploy/ does not", what, m[1])
		}
	}
	if checked != len(actual) {
		t.Errorf("checked %d rows of docs/migrating.md's Manifests table, want %d", checked, len(actual))
	}
}
