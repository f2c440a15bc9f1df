package release

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const testDigest = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

// SetImage on deploy/base, as make push does: kubectl apply -k deploy/, and
// every overlay, then run the pushed image by tag and digest, and the
// kustomization keeps its comments.
func TestSetImageInDeploy(t *testing.T) {
	render := []string{"kubectl", "kustomize"} // or kustomize, which it embeds
	if _, err := exec.LookPath("kubectl"); err != nil {
		render = []string{requireTool(t, "kustomize"), "build"}
	}
	deploy := filepath.Join(t.TempDir(), "deploy")
	if err := os.CopyFS(deploy, os.DirFS("../../deploy")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(deploy, "base", "kustomization.yaml")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetImage(path, "cainjekt", "registry.example.com/team/cainjekt", "v1", testDigest); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(before), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") && !strings.Contains(string(after), line) {
			t.Errorf("SetImage dropped the comment %q", line)
		}
	}
	want := "registry.example.com/team/cainjekt:v1@" + testDigest
	for _, dir := range []string{"", "overlays/monitoring", "overlays/opt-out"} {
		out, err := exec.Command(render[0], render[1], filepath.Join(deploy, dir)).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		var images []string
		for _, line := range strings.Split(string(out), "\n") {
			if image, ok := strings.CutPrefix(strings.TrimSpace(line), "image: "); ok {
				images = append(images, image)
			}
		}
		if len(images) != 2 || images[0] != want || images[1] != want {
			t.Errorf("deploy/%s runs %v, want the init container and the plugin on %s", dir, images, want)
		}
	}
}

// SetImage edits the cainjekt entry of a kustomization as kustomize writes
// it (items at the key's column, name not first), leaves other entries
// alone, and adds an images list where there is none.
func TestSetImage(t *testing.T) {
	entry := "- name: cainjekt\n  newName: registry.example.com/cainjekt\n  newTag: v2\n  digest: " + testDigest + "\n"
	for _, c := range []struct{ name, before, after string }{
		{
			"kustomize's layout",
			"resources:\n- daemonset.yaml\nimages:\n- name: busybox\n  newTag: \"1.37\"\n- newName: ghcr.io/cainjekt/cainjekt\n  name: cainjekt\n  newTag: v0.1.0\nnamespace: cainjekt\n",
			"resources:\n- daemonset.yaml\nimages:\n- name: busybox\n  newTag: \"1.37\"\n" + entry + "namespace: cainjekt\n",
		},
		{
			"another image only",
			"images:\n  - name: busybox\n    newTag: \"1.37\"\n",
			"images:\n  - name: busybox\n    newTag: \"1.37\"\n" + indent(entry, "  "),
		},
		{
			"no images",
			"# mine\nresources:\n  - daemonset.yaml",
			"# mine\nresources:\n  - daemonset.yaml\nimages:\n" + indent(entry, "  "),
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kustomization.yaml")
			if err := os.WriteFile(path, []byte(c.before), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := SetImage(path, "cainjekt", "registry.example.com/cainjekt", "v2", testDigest); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); string(got) != c.after {
				t.Errorf("got\n%s\nwant\n%s", got, c.after)
			}
		})
	}
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+prefix) + "\n"
}
