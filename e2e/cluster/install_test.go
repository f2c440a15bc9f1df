package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cainjekt/cainjekt/e2e/oci"
	"github.com/cainjekt/cainjekt/e2e/release"
	"github.com/cainjekt/cainjekt/e2e/testbed"
)

// The tests run in this order; each builds on what the ones before did. A
// failed install fails the rest on their own.

// TestImageIsReproducible rebuilds make image's image from the same commit
// and version: the index and every platform's manifest must be the same.
func TestImageIsReproducible(t *testing.T) {
	track(t)
	want := archiveIndexDigest(t, bed.archive)
	img, err := release.Build(testContext(t), release.Options{
		Src: bed.repo, Version: bed.version, Ref: bed.image, Out: filepath.Join(bed.dir, "rebuilt.tar"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.Index != want {
		t.Errorf("rebuilt index %s, make image wrote %s", img.Index, want)
	}
	t.Logf("index %s, manifests %v", img.Index, img.Manifests)
}

// TestMakePush runs docs/operations.md's `make push`, in a checkout, to the
// user's registry (Debian's docker-registry on the loopback): the registry
// serves the index of make image's archive, both platforms, and the
// checkout's deploy/ names the image by tag and digest. skopeo, the docs'
// other way, pushes the same index.
func TestMakePush(t *testing.T) {
	track(t)
	ctx := testContext(t)
	registry := bed.registry.Addr + "/team"
	tag := imageTag(bed.image)
	// As the user types it, in a shell that is not inside make.
	out := mustShell(t, ctx, bed.repo, "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make push REGISTRY="+registry+" TAG="+tag+
		" VERSION="+bed.version+" IMAGE_ARCHIVE="+filepath.Join(bed.dir, "pushed.tar")+" DEPLOY="+bed.deploy)
	want := archiveIndexDigest(t, bed.archive)
	ref := registry + "/cainjekt:" + tag
	checkRegistryImage(t, ctx, ref, want)
	bed.pushed = ref + "@" + want
	if !strings.Contains(out, "pushed\t"+bed.pushed) {
		t.Errorf("make push does not say it pushed %s:\n%s", bed.pushed, out)
	}
	rendered := mustShell(t, ctx, bed.dir, "kubectl kustomize deploy/")
	if n := strings.Count(rendered, "image: "+bed.pushed+"\n"); n != 2 {
		t.Errorf("deploy/ names %s in %d containers, want the init container and the plugin:\n%s", bed.pushed, n, rendered)
	}

	// The registry serves plain HTTP on the loopback: the one flag the docs' command lacks.
	skopeoRef := registry + "/cainjekt:" + tag + "-skopeo"
	mustShell(t, ctx, bed.dir, "skopeo copy --all --dest-tls-verify=false oci-archive:"+bed.archive+" docker://"+skopeoRef)
	checkRegistryImage(t, ctx, skopeoRef, want)
}

// checkRegistryImage reads an image's index and manifests from the registry
// with skopeo: the index must be want, with a manifest per platform.
func checkRegistryImage(t *testing.T, ctx context.Context, ref, want string) {
	t.Helper()
	raw := mustShell(t, ctx, bed.dir, "skopeo inspect --raw --tls-verify=false docker://"+ref)
	if got := oci.DataBlob(oci.MediaTypeIndex, []byte(raw)).Digest; got != want {
		t.Errorf("the registry serves index %s for %s, the archive holds %s", got, ref, want)
	}
	var index struct{ Manifests []oci.Descriptor }
	if err := json.Unmarshal([]byte(raw), &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != len(release.Platforms) {
		t.Fatalf("the registry's index lists %d manifests:\n%s", len(index.Manifests), raw)
	}
	repo := ref[:strings.LastIndex(ref, ":")]
	for _, m := range index.Manifests {
		manifest := mustShell(t, ctx, bed.dir, "skopeo inspect --raw --tls-verify=false docker://"+repo+"@"+m.Digest)
		if got := oci.DataBlob(oci.MediaTypeManifest, []byte(manifest)).Digest; got != m.Digest {
			t.Errorf("the registry serves %s for the %s manifest %s", got, m.Platform.Architecture, m.Digest)
		}
	}
}

// archiveIndexDigest reads the image index an OCI layout archive names.
func archiveIndexDigest(t *testing.T, archive string) string {
	t.Helper()
	out, err := exec.Command("tar", "-xOf", archive, "index.json").Output()
	if err != nil {
		t.Fatalf("read index.json of %s: %v", archive, err)
	}
	var index struct{ Manifests []oci.Descriptor }
	if err := json.Unmarshal(out, &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json of %s: %v %s", archive, err, out)
	}
	return index.Manifests[0].Digest
}

// TestInstall is docs/operations.md's Install section, command by command,
// after make push: lint and create the CA bundle, apply, wait for the
// rollout. The node pulls the image make push pushed, from the registry.
func TestInstall(t *testing.T) {
	track(t)
	ctx := testContext(t)
	if bed.pushed == "" {
		t.Fatal("make push did not point deploy/ at a pushed image")
	}
	mustShell(t, ctx, bed.dir, "cainjekt lint --strict ca-bundle.pem")
	mustShell(t, ctx, bed.dir, "kubectl apply -f deploy/base/namespace.yaml")
	mustShell(t, ctx, bed.dir, "kubectl -n cainjekt create configmap cainjekt-ca-bundle --from-file=ca-bundle.pem=ca-bundle.pem")
	_, stderr, err := shell(ctx, bed.dir, "kubectl apply -k deploy/")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr, "Warning") {
		t.Errorf("kubectl apply -k deploy/ warned:\n%s", stderr)
	}
	rollout(t, ctx)
	image := kubectl(t, ctx, "-n", "cainjekt", "get", "pods", "-l", "app.kubernetes.io/name=cainjekt", "-o", "jsonpath={.items[*].spec.containers[0].image}")
	if image != bed.pushed {
		t.Errorf("the DaemonSet runs %q, want %q", image, bed.pushed)
	}
	// Pulled from the registry: nothing imported it into the node.
	imageID := kubectl(t, ctx, "-n", "cainjekt", "get", "pods", "-l", "app.kubernetes.io/name=cainjekt", "-o", "jsonpath={.items[*].status.containerStatuses[0].imageID}")
	if digest := bed.pushed[strings.LastIndex(bed.pushed, "@")+1:]; !strings.HasSuffix(imageID, "@"+digest) {
		t.Errorf("the plugin's image ID is %q, want the pushed index %s", imageID, digest)
	}
}

// importImage loads an image archive into the node's containerd with the
// command docs/operations.md gives a user without a registry.
func importImage(t *testing.T, ctx context.Context, archive string) {
	t.Helper()
	mustShell(t, ctx, bed.dir, "ctr -n k8s.io images import "+archive)
}

// rollout waits for the DaemonSet's rollout, as the docs' Verify section does.
func rollout(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := bed.cluster.Kubectl(ctx, "-n", "cainjekt", "rollout", "status", "daemonset/cainjekt", "--timeout=3m"); err != nil {
		// Why: the pods, or the events of a DaemonSet that could not make them.
		pods, _ := bed.cluster.Kubectl(ctx, "-n", "cainjekt", "describe", "pods")
		events, _ := bed.cluster.Kubectl(ctx, "-n", "cainjekt", "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("%v\n%s\n%s", err, pods, tail(events, 10))
	}
}

// TestAnnotatedPodTrustsTheCA: in one namespace, the annotated pod trusts
// the CA that only the ConfigMap holds, with curl and Python, also in a
// `kubectl exec` session's environment; the pod without the annotation does
// not.
func TestAnnotatedPodTrustsTheCA(t *testing.T) {
	track(t)
	ctx := testContext(t)
	namespace(t, ctx, "apps", nil)
	runPod(t, ctx, "apps", "annotated", podOptions{annotations: map[string]string{prefix + "/enabled": "true"}})
	runPod(t, ctx, "apps", "plain", podOptions{})
	if !trusts(t, ctx, "apps", "annotated", bed.server.URL) {
		t.Error("the annotated pod does not trust the CA")
	}
	// docs/operations.md's Verify: look inside.
	if env, _ := inPod(ctx, "apps", "annotated", "sh", "-c", "echo $SSL_CERT_FILE"); env != "/etc/cainjekt/bundle.pem" {
		t.Errorf("SSL_CERT_FILE in kubectl exec = %q", env)
	}
	out, _, err := shell(ctx, bed.dir, "kubectl -n apps exec annotated -- cat /etc/cainjekt/status.json")
	var status struct{ Result, Pod, Family string }
	if err != nil || json.Unmarshal([]byte(out), &status) != nil || status.Result != "ok" || status.Pod != "annotated" || status.Family != "debian" {
		t.Errorf("status.json: %+v (%v)\n%s", status, err, out)
	}
	if trusts(t, ctx, "apps", "plain", bed.server.URL) {
		t.Error("the pod without the annotation trusts the CA")
	}
	if injected(ctx, "apps", "plain") {
		t.Error("the pod without the annotation has /etc/cainjekt")
	}
}

// TestUserNamespacedPod: a pod with a user namespace of its own
// (hostUsers: false, its IDs mapped by the kubelet) trusts the CA, and what
// the hook created in its image belongs to the pod's root.
func TestUserNamespacedPod(t *testing.T) {
	track(t)
	ctx := testContext(t)
	namespace(t, ctx, "userns", nil)
	runPod(t, ctx, "userns", "own-users", podOptions{annotations: map[string]string{prefix + "/enabled": "true"}, ownUsers: true})
	if m, _ := inPod(ctx, "userns", "own-users", "cat", "/proc/self/uid_map"); len(strings.Fields(m)) < 2 || strings.Fields(m)[1] == "0" {
		t.Fatalf("the pod is not in a user namespace of its own: uid_map %q", m)
	}
	if !trusts(t, ctx, "userns", "own-users", bed.server.URL) {
		t.Error("the pod with a user namespace of its own does not trust the CA")
	}
	if owner, _ := inPod(ctx, "userns", "own-users", "stat", "-c", "%u:%g", "/usr/local/share/ca-certificates/cainjekt.crt"); owner != "0:0" {
		t.Errorf("the anchor the hook created is owned by %q in the pod, not by its root", owner)
	}
}

// TestPodMountedBundle: pods that mount their own CA bundle from a
// ConfigMap over the image's, as a subPath or as the whole /etc/ssl/certs,
// trust its CA and ours once opted in; the bundle they mount stays theirs.
func TestPodMountedBundle(t *testing.T) {
	track(t)
	ctx := testContext(t)
	namespace(t, ctx, "volumes", nil)
	apply(t, ctx, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "own-ca", "namespace": "volumes"},
		"data": map[string]string{"ca-certificates.crt": string(bed.rotated.CertPEM)}})
	volume := []any{map[string]any{"name": "own-ca", "configMap": map[string]any{"name": "own-ca"}}}
	for name, mount := range map[string]map[string]any{
		"subpath":   {"name": "own-ca", "mountPath": "/etc/ssl/certs/ca-certificates.crt", "subPath": "ca-certificates.crt"},
		"directory": {"name": "own-ca", "mountPath": "/etc/ssl/certs"},
	} {
		runPod(t, ctx, "volumes", name, podOptions{annotations: map[string]string{prefix + "/enabled": "true"},
			volumes: volume, volumeMounts: []any{mount}})
		if !trusts(t, ctx, "volumes", name, bed.rotServer.URL) {
			t.Errorf("%s: the pod no longer trusts the CA of the bundle it mounts", name)
		}
		if !trusts(t, ctx, "volumes", name, bed.server.URL) {
			t.Errorf("%s: the pod does not trust the injected CA", name)
		}
		if got, _ := inPod(ctx, "volumes", name, "cat", "/etc/ssl/certs/ca-certificates.crt"); got != strings.TrimSpace(string(bed.rotated.CertPEM)) {
			t.Errorf("%s: the mounted bundle changed:\n%s", name, got)
		}
		// What the hook reported reaches the pod's owner.
		ev := podEvent(t, ctx, "volumes", name, "TrustFileShadowed")
		if !strings.Contains(ev.Message, `"/etc/ssl/certs/ca-certificates.crt"`) {
			t.Errorf("%s: the TrustFileShadowed event does not name the mounted bundle: %q", name, ev.Message)
		}
	}
}

// TestNamespaceOptIn: a namespace label opts its pods in, which the plugin
// learns from the real API server, through the kubernetes Service, with the
// projected token and the shipped RBAC. The service account may get
// namespaces and do nothing else.
func TestNamespaceOptIn(t *testing.T) {
	track(t)
	ctx := testContext(t)
	namespace(t, ctx, "opted-in", map[string]string{prefix + "/enabled": "true"})
	runPod(t, ctx, "opted-in", "unannotated", podOptions{})
	if !trusts(t, ctx, "opted-in", "unannotated", bed.server.URL) {
		t.Error("a pod of a namespace labelled enabled=true does not trust the CA")
	}
	sa := "--as=system:serviceaccount:cainjekt:cainjekt"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "namespaces"}, "yes"},
		{[]string{"list", "namespaces"}, "no"},
		{[]string{"get", "pods"}, "no"},
		{[]string{"get", "secrets", "-A"}, "no"},
		{[]string{"get", "configmaps", "-n", "cainjekt"}, "no"},
		{[]string{"create", "events", "-n", "opted-in"}, "yes"},
		{[]string{"create", "events.events.k8s.io", "-n", "opted-in"}, "no"},
		{[]string{"get", "events", "-n", "opted-in"}, "no"},
		{[]string{"patch", "events", "-n", "opted-in"}, "no"},
		{[]string{"delete", "events", "-n", "opted-in"}, "no"},
	} {
		out, _ := bed.cluster.Kubectl(ctx, append([]string{"auth", "can-i", sa}, c.args...)...)
		if out != c.want {
			t.Errorf("kubectl auth can-i %s as the service account: %q, want %q", strings.Join(c.args, " "), out, c.want)
		}
	}
	// --list: every resource rule but the self-reviews every user has.
	list := kubectl(t, ctx, "auth", "can-i", "--list", sa)
	var rules []string
	for _, line := range strings.Split(list, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "self") || strings.HasPrefix(f[0], "[") {
			continue
		}
		rules = append(rules, strings.Join(f, " "))
	}
	if !slices.Equal(rules, []string{"events [] [] [create]", "namespaces [] [] [get]"}) {
		t.Errorf("the service account can:\n%s", list)
	}
	if v := metric(t, ctx, `cainjekt_namespace_lookups_total{result="ok"}`); v < 1 {
		t.Errorf("no successful namespace lookup counted: %v", v)
	}
}

// TestPodEvents: a pod whose opt-in is misspelt, and one that names a
// bundle that does not exist, each get a Warning Event from the plugin on
// the real API server, with the shipped RBAC: `kubectl describe pod` shows
// it, with the plugin and the node as its source. Under fail-open the
// second pod runs, uninjected.
func TestPodEvents(t *testing.T) {
	track(t)
	ctx := testContext(t)
	namespace(t, ctx, "events", nil)
	runPod(t, ctx, "events", "misspelt", podOptions{annotations: map[string]string{prefix + "/enable": "true"}})
	runPod(t, ctx, "events", "unknown-bundle", podOptions{annotations: map[string]string{prefix + "/enabled": "true", prefix + "/bundle": "no-such-bundle"}})
	for pod, want := range map[string]struct{ reason, message string }{
		"misspelt":       {"UnknownAnnotation", `unknown annotation "` + prefix + `/enable": did you mean "` + prefix + `/enabled"?`},
		"unknown-bundle": {"UnknownBundle", `CA injection of container "app" failed, the container starts without it (fail-open): no CA bundle named "no-such-bundle"`},
	} {
		ev := podEvent(t, ctx, "events", pod, want.reason)
		if ev.Type != "Warning" || !strings.HasPrefix(ev.Message, want.message) || ev.Count != 1 {
			t.Errorf("%s: %s event %+v, want a Warning, once, saying %q", pod, want.reason, ev, want.message)
		}
		if ev.Source.Component != "cainjekt" || ev.Source.Host != testbed.NodeName {
			t.Errorf("%s: the event's source is %+v, want cainjekt on %s", pod, ev.Source, testbed.NodeName)
		}
		// kubectl describe finds a pod's events by its UID, among others.
		if uid := kubectl(t, ctx, "-n", "events", "get", "pod", pod, "-o", "jsonpath={.metadata.uid}"); ev.InvolvedObject.UID != uid || ev.InvolvedObject.Kind != "Pod" {
			t.Errorf("%s: the event is about %+v, want the pod of UID %s", pod, ev.InvolvedObject, uid)
		}
		if desc := kubectl(t, ctx, "-n", "events", "describe", "pod", pod); !strings.Contains(desc, want.reason) || !strings.Contains(desc, want.message) {
			t.Errorf("%s: kubectl describe pod does not show the event:\n%s", pod, desc)
		}
	}
	if injected(ctx, "events", "unknown-bundle") {
		t.Error("the pod naming a bundle that does not exist is injected")
	}
	if v := metric(t, ctx, `cainjekt_pod_events_total{result="posted"}`); v < 2 {
		t.Errorf("cainjekt_pod_events_total{result=\"posted\"} = %v, want at least 2", v)
	}
}

// event is what the tests read of a core/v1 Event.
type event struct {
	Type, Reason, Message string
	Count                 int
	Source                struct{ Component, Host string }
	InvolvedObject        struct{ Kind, Name, UID string }
}

// podEvent waits up to a minute for the one event of a reason about a pod
// from cainjekt, selected as docs/operations.md does: the plugin posts in
// the background.
func podEvent(t *testing.T, ctx context.Context, ns, pod, reason string) event {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out := kubectl(t, ctx, "-n", ns, "get", "events", "-o", "json",
			"--field-selector", "source=cainjekt,involvedObject.kind=Pod,involvedObject.name="+pod+",reason="+reason)
		var list struct{ Items []event }
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		switch {
		case len(list.Items) > 1:
			t.Fatalf("%d %s events about pod %s/%s, want one: %+v", len(list.Items), reason, ns, pod, list.Items)
		case len(list.Items) == 1:
			return list.Items[0]
		case time.Now().After(deadline):
			all, _ := bed.cluster.Kubectl(ctx, "-n", ns, "get", "events")
			t.Fatalf("no %s event about pod %s/%s after a minute; the namespace's events:\n%s", reason, ns, pod, all)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestPodSecurity: the DaemonSet runs under its namespace's Pod Security
// labels, which the same pod would break in a restricted namespace; an
// injected pod in a namespace that enforces `restricted` runs and trusts
// the CA: the injection adds nothing that the restricted level rejects.
func TestPodSecurity(t *testing.T) {
	track(t)
	ctx := testContext(t)
	labels := kubectl(t, ctx, "get", "namespace", "cainjekt", "-o", "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}")
	if labels != "privileged" {
		t.Errorf("namespace cainjekt enforces %q", labels)
	}
	restricted := map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	namespace(t, ctx, "restricted", restricted)
	// The admission is real: the plugin's own pod is refused there.
	ds := kubectl(t, ctx, "-n", "cainjekt", "get", "daemonset", "cainjekt", "-o", "json")
	var obj map[string]any
	if err := json.Unmarshal([]byte(ds), &obj); err != nil {
		t.Fatal(err)
	}
	spec := obj["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	// What other admission plugins would refuse first: an account and a
	// priority class of the cainjekt namespace.
	delete(spec, "serviceAccountName")
	delete(spec, "serviceAccount") // the API server's deprecated copy of it
	delete(spec, "priorityClassName")
	pod, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "plugin-copy", "namespace": "restricted"},
		"spec":     spec,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bed.cluster.KubectlIn(ctx, pod, "apply", "--dry-run=server", "-f", "-"); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Errorf("the plugin's pod in a restricted namespace: %v, want a PodSecurity violation", err)
	}
	runPod(t, ctx, "restricted", "injected", podOptions{restricted: true, annotations: map[string]string{prefix + "/enabled": "true"}})
	if !trusts(t, ctx, "restricted", "injected", bed.server.URL) {
		t.Error("an injected pod in a restricted namespace does not trust the CA")
	}
	if uid, _ := inPod(ctx, "restricted", "injected", "id", "-u"); uid != "1000" {
		t.Errorf("the restricted pod runs as %q", uid)
	}
}

// TestMetricsService: /metrics, /healthz and /readyz through the metrics
// Service, and the metrics clean under promtool.
func TestMetricsService(t *testing.T) {
	track(t)
	ctx := testContext(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := serviceGet(t, ctx, path); code != http.StatusOK {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	code, body := serviceGet(t, ctx, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	// As docs/operations.md reads them: the API server's proxy to the Service.
	proxied := mustShell(t, ctx, bed.dir, "kubectl get --raw /api/v1/namespaces/cainjekt/services/cainjekt-metrics:metrics/proxy/metrics")
	if !strings.Contains(proxied, "cainjekt_nri_connected 1") {
		t.Errorf("/metrics through the API server's proxy:\n%s", proxied)
	}
	check := exec.CommandContext(ctx, "promtool", "check", "metrics")
	check.Stdin = strings.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if !strings.Contains(body, `cainjekt_build_info{version="`+bed.version+`"`) {
		t.Errorf("/metrics does not name version %s", bed.version)
	}
	if !strings.Contains(body, "cainjekt_nri_connected 1") {
		t.Error("/metrics: not connected to containerd")
	}
}

// serviceGet fetches a path of the plugin through the metrics Service's
// cluster IP, which kube-proxy routes to the plugin pod.
func serviceGet(t *testing.T, ctx context.Context, path string) (int, string) {
	t.Helper()
	ip := kubectl(t, ctx, "-n", "cainjekt", "get", "service", "cainjekt-metrics", "-o", "jsonpath={.spec.clusterIP}")
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + ip + ":9443" + path)
	if err != nil {
		t.Fatalf("GET %s through the Service: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// metric is one series' value from /metrics, through the Service.
func metric(t *testing.T, ctx context.Context, series string) float64 {
	t.Helper()
	_, body := serviceGet(t, ctx, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return 0
}

// TestCARotation updates the ConfigMap as docs/operations.md says: new pods
// trust the new CA without any restart of the plugin.
func TestCARotation(t *testing.T) {
	track(t)
	ctx := testContext(t)
	before := pluginPod(t, ctx)
	if err := os.WriteFile(bed.caFile, append(append([]byte{}, bed.ca.CertPEM...), bed.rotated.CertPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	mustShell(t, ctx, bed.dir, "kubectl -n cainjekt create configmap cainjekt-ca-bundle --from-file=ca-bundle.pem=ca-bundle.pem --dry-run=client -o yaml | kubectl apply -f -")
	namespace(t, ctx, "rotation", nil)
	// The kubelet swaps the file on its next sync of the plugin's pod.
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; ; i++ {
		name := fmt.Sprintf("after-%d", i)
		runPod(t, ctx, "rotation", name, podOptions{annotations: map[string]string{prefix + "/enabled": "true"}})
		if trusts(t, ctx, "rotation", name, bed.rotServer.URL) {
			if !trusts(t, ctx, "rotation", name, bed.server.URL) {
				t.Error("after the rotation to both CAs, a new pod no longer trusts the first")
			}
			t.Logf("a new pod trusted the rotated CA %d pods after the update", i+1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new pod trusts the rotated CA 3 minutes after the ConfigMap update")
		}
		time.Sleep(5 * time.Second)
	}
	if after := pluginPod(t, ctx); after != before {
		t.Errorf("the plugin's pod changed from %s to %s", before, after)
	}
}

// pluginPod is the plugin pod's name, UID and restart count: equal values
// mean nothing was restarted.
func pluginPod(t *testing.T, ctx context.Context) string {
	t.Helper()
	return kubectl(t, ctx, "-n", "cainjekt", "get", "pods", "-l", "app.kubernetes.io/name=cainjekt",
		"-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.containerStatuses[0].restartCount}{end}")
}

// TestUpgrade restarts the DaemonSet, then rolls out a new image tag, while
// an injected pod runs: it keeps running and trusting, new pods are
// injected after each rollout, the new plugin adopts the running pod's
// staging and removes it with the pod.
func TestUpgrade(t *testing.T) {
	track(t)
	ctx := testContext(t)
	namespace(t, ctx, "upgrade", nil)
	enabled := podOptions{annotations: map[string]string{prefix + "/enabled": "true"}}
	runPod(t, ctx, "upgrade", "running", enabled)
	runningID := containerID(t, ctx, "upgrade", "running")
	staging := filepath.Join("/run/cainjekt/containers", runningID)

	steps := []struct {
		name string
		do   func()
	}{
		{"rollout restart", func() {
			mustShell(t, ctx, bed.dir, "kubectl -n cainjekt rollout restart daemonset/cainjekt")
		}},
		{"new image tag", func() {
			bed.nextImage = strings.TrimSuffix(bed.image, ":"+imageTag(bed.image)) + ":" + imageTag(bed.image) + "-next"
			archive := filepath.Join(bed.dir, "next.tar")
			if _, err := release.Build(ctx, release.Options{Src: bed.repo, Version: bed.version + "-next", Ref: bed.nextImage, Out: archive}); err != nil {
				t.Fatal(err)
			}
			importImage(t, ctx, archive)
			mustShell(t, ctx, bed.dir, "cd deploy/base && kustomize edit set image cainjekt="+bed.nextImage)
			mustShell(t, ctx, bed.dir, "kubectl apply -k deploy/")
		}},
	}
	for i, step := range steps {
		before := pluginPod(t, ctx)
		step.do()
		rollout(t, ctx)
		if after := pluginPod(t, ctx); after == before {
			t.Fatalf("%s: the plugin's pod was not replaced", step.name)
		}
		if restarts := kubectl(t, ctx, "-n", "upgrade", "get", "pod", "running", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); restarts != "0" {
			t.Errorf("%s: the running pod restarted %s times", step.name, restarts)
		}
		if !trusts(t, ctx, "upgrade", "running", bed.server.URL) {
			t.Errorf("%s: the running injected pod no longer trusts the CA", step.name)
		}
		if _, err := os.Stat(staging); err != nil {
			t.Errorf("%s: the running pod's staging: %v", step.name, err)
		}
		name := fmt.Sprintf("new-%d", i)
		runPod(t, ctx, "upgrade", name, enabled)
		if !trusts(t, ctx, "upgrade", name, bed.server.URL) {
			t.Errorf("%s: a pod started after the rollout is not injected", step.name)
		}
	}
	if v := metric(t, ctx, `cainjekt_build_info{version="`+bed.version+`-next",goversion="`+goVersion(t)+`"}`); v != 1 {
		t.Errorf("the upgraded plugin's build_info = %v", v)
	}
	// Adopted: the new plugin removes the old pod's staging with it, and
	// nothing is staged but for the injected containers still running.
	kubectl(t, ctx, "-n", "upgrade", "delete", "pod", "running", "--wait=true")
	want := []string{containerID(t, ctx, "upgrade", "new-0"), containerID(t, ctx, "upgrade", "new-1")}
	slices.Sort(want)
	var staged []string
	// The kubelet removes a deleted pod's containers (the RemoveContainer
	// that the plugin cleans up on) in its container GC, once a minute.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		entries, err := os.ReadDir("/run/cainjekt/containers")
		if err != nil {
			t.Fatal(err)
		}
		staged = nil
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") { // the plugin's lock
				staged = append(staged, e.Name())
			}
		}
		if slices.Equal(staged, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("staged after the upgrade: %v, want the running injected containers %v (the old pod's was %s)", staged, want, runningID)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func imageTag(ref string) string { return ref[strings.LastIndex(ref, ":")+1:] }

// goVersion is the Go toolchain the images were built with.
func goVersion(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// containerID is a pod's container's ID in containerd.
func containerID(t *testing.T, ctx context.Context, ns, pod string) string {
	t.Helper()
	id := kubectl(t, ctx, "-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].containerID}")
	return strings.TrimPrefix(id, "containerd://")
}

// TestDoctor runs `cainjekt doctor` as docs/operations.md's Verify section
// does: every check passes on this node, naming containerd.
func TestDoctor(t *testing.T) {
	track(t)
	ctx := testContext(t)
	out, _, err := shell(ctx, bed.dir, "kubectl -n cainjekt exec ds/cainjekt -- /cainjekt doctor")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ok   CA bundle", "ok   dynamic CA root", "ok   host binary", "ok   NRI socket " + testbed.NRISocketPath + ": containerd " + strings.TrimPrefix(testbed.ContainerdVersion, "v")} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor says nothing like %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("doctor:\n%s", out)
	}
}

// TestOptOutOverlay applies deploy/overlays/opt-out: pods that say nothing
// are injected, a pod's enabled=false and the excluded namespaces are not.
// deploy/ is applied again afterwards.
func TestOptOutOverlay(t *testing.T) {
	track(t)
	ctx := testContext(t)
	mustShell(t, ctx, bed.dir, "kubectl apply -k deploy/overlays/opt-out")
	rollout(t, ctx)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		mustShell(t, ctx, bed.dir, "kubectl apply -k deploy/")
		rollout(t, ctx)
	})
	namespace(t, ctx, "optout", nil)
	runPod(t, ctx, "optout", "silent", podOptions{})
	runPod(t, ctx, "optout", "refuses", podOptions{annotations: map[string]string{prefix + "/enabled": "false"}})
	if !trusts(t, ctx, "optout", "silent", bed.server.URL) {
		t.Error("opt-out mode: a pod that says nothing is not injected")
	}
	if trusts(t, ctx, "optout", "refuses", bed.server.URL) || injected(ctx, "optout", "refuses") {
		t.Error(`opt-out mode: a pod with enabled: "false" is injected`)
	}
	runPod(t, ctx, "kube-public", "excluded", podOptions{})
	if injected(ctx, "kube-public", "excluded") {
		t.Error("opt-out mode: a pod of an excluded namespace is injected")
	}
}

// TestUninstall: `kubectl delete -k deploy/` removes every object; running
// injected pods keep working, new pods start uninjected, and the node keeps
// /opt/cainjekt and /run/cainjekt until removed by hand, as the docs say.
func TestUninstall(t *testing.T) {
	track(t)
	ctx := testContext(t)
	namespace(t, ctx, "uninstall", nil)
	runPod(t, ctx, "uninstall", "before", podOptions{annotations: map[string]string{prefix + "/enabled": "true"}})
	mustShell(t, ctx, bed.dir, "kubectl delete -k deploy/")
	for _, obj := range [][]string{{"namespace", "cainjekt"}, {"clusterrole", "cainjekt"}, {"clusterrolebinding", "cainjekt"}} {
		if out := kubectl(t, ctx, "get", obj[0], obj[1], "--ignore-not-found", "-o", "name"); out != "" {
			t.Errorf("%s is left after kubectl delete -k deploy/", out)
		}
	}
	if !trusts(t, ctx, "uninstall", "before", bed.server.URL) {
		t.Error("an injected pod stopped trusting the CA on uninstall")
	}
	runPod(t, ctx, "uninstall", "after", podOptions{annotations: map[string]string{prefix + "/enabled": "true"}})
	if injected(ctx, "uninstall", "after") {
		t.Error("a pod started after the uninstall is injected")
	}
	for _, path := range []string{"/opt/cainjekt/bin/cainjekt-hook", "/run/cainjekt/containers"} {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("the docs say %s stays on the node until removed: %v", path, err)
		}
	}
	// The docs' last step, once no injected container is left.
	kubectl(t, ctx, "-n", "uninstall", "delete", "pod", "before", "--wait=true")
	if err := os.RemoveAll("/run/cainjekt"); err != nil {
		t.Error(err)
	}
	if err := os.RemoveAll("/opt/cainjekt"); err != nil {
		t.Error(err)
	}
}
