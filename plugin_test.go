//go:build !hookonly

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
)

// newTestPlugin returns a plugin whose CA file is caFile (written from
// testdata unless empty) and whose staging lives in a temp dir.
func newTestPlugin(t testing.TB, policy string, caPEM []byte) (*plugin, string) {
	t.Helper()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca-bundle.pem")
	if caPEM != nil {
		if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := loadConfig([]string{"--ca-file", caFile, "--fail-policy", policy,
		"--dynamic-ca-root", filepath.Join(dir, "containers"), "--host-binary", "/opt/cainjekt/bin/cainjekt"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStager(cfg.dynamicCARoot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newPlugin(cfg, newLogger(io.Discard, "text", 0), st), caFile
}

func optedIn(extra map[string]string) *api.PodSandbox {
	ann := map[string]string{testPrefix + "/enabled": "true"}
	for k, v := range extra {
		ann[k] = v
	}
	return podWith(ann)
}

func container(id, name string, env ...string) *api.Container {
	return &api.Container{Id: id, Name: name, Args: []string{"/app", "--serve"}, Env: append([]string{"PATH=/bin"}, env...)}
}

func idN(n int) string { return strings.Repeat(string(rune('a'+n)), 64) }

func TestCreateContainerAdjustsAnOptedInContainer(t *testing.T) {
	p, _ := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	adj, updates, err := p.CreateContainer(context.Background(), optedIn(nil), container(testID, "app", "SSL_CERT_FILE=/mine.pem"))
	if err != nil || updates != nil || adj == nil {
		t.Fatalf("adj %v updates %v err %v", adj, updates, err)
	}
	staging := filepath.Join(p.cfg.dynamicCARoot, testID)
	var mounts []string
	for _, m := range adj.GetMounts() {
		mounts = append(mounts, m.Source+" -> "+m.Destination+" "+strings.Join(m.Options, ","))
	}
	if want := []string{
		staging + " -> /etc/cainjekt bind,ro,nosuid,nodev,noexec",
		"/opt/cainjekt/bin/cainjekt -> /.cainjekt/cainjekt bind,ro,nosuid,nodev",
	}; !slices.Equal(mounts, want) {
		t.Errorf("mounts\n%v\nwant\n%v", mounts, want)
	}
	hooks := adj.GetHooks().GetCreateRuntime()
	if len(hooks) != 1 || hooks[0].Path != "/opt/cainjekt/bin/cainjekt" || hooks[0].Args[1] != "hook" || hooks[0].Timeout.GetValue() != 5 ||
		!slices.Equal(hooks[0].Env, []string{hookPATH, "GOMAXPROCS=1"}) {
		t.Errorf("hooks %v", hooks)
	}
	if got := adj.GetArgs(); !slices.Equal(got, []string{"/.cainjekt/cainjekt", "wrap", "--", "/app", "--serve"}) {
		t.Errorf("args %v", got)
	}
	var env []string
	for _, e := range adj.GetEnv() {
		env = append(env, e.Key+"="+e.Value)
	}
	// SSL_CERT_FILE was the pod's own: kept.
	if want := []string{"REQUESTS_CA_BUNDLE=/etc/cainjekt/bundle.pem", "PIP_CERT=/etc/cainjekt/bundle.pem", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=/etc/cainjekt/bundle.pem",
		"NODE_EXTRA_CA_CERTS=/etc/cainjekt/ca.pem", "DENO_CERT=/etc/cainjekt/ca.pem", "CURL_CA_BUNDLE=/etc/cainjekt/bundle.pem",
		"GIT_SSL_CAINFO=/etc/cainjekt/bundle.pem", "AWS_CA_BUNDLE=/etc/cainjekt/bundle.pem"}; !slices.Equal(env, want) {
		t.Errorf("env %v, want %v", env, want)
	}
	if data, err := os.ReadFile(filepath.Join(staging, stagedCA)); err != nil || countCerts(data) != 1 {
		t.Errorf("staged ca.pem: %v", err)
	}
	if p.metrics.injections.Load() != 1 || p.activeCount() != 1 {
		t.Errorf("injections %d active %d", p.metrics.injections.Load(), p.activeCount())
	}
}

func TestCreateContainerLeavesOthersAlone(t *testing.T) {
	p, _ := newTestPlugin(t, failClosed, readTestdata(t, "certs/corp-root.pem"))
	for _, pod := range []*api.PodSandbox{podWith(nil), optedIn(map[string]string{testPrefix + "/exclude-containers": "app"})} {
		adj, _, err := p.CreateContainer(context.Background(), pod, container(testID, "app"))
		if adj != nil || err != nil {
			t.Errorf("adjusted %v, %v", adj, err)
		}
	}
	if ids, _ := p.stager.list(); len(ids) != 0 {
		t.Errorf("staged %v", ids)
	}
	if p.metrics.skips.get(skipNotEnabled) != 1 || p.metrics.skips.get(skipContainerExcluded) != 1 {
		t.Error("skips not counted")
	}
}

func TestCreateContainerFailPolicyWithoutBundle(t *testing.T) {
	open, _ := newTestPlugin(t, failOpen, nil)
	adj, _, err := open.CreateContainer(context.Background(), optedIn(nil), container(testID, "app"))
	if adj != nil || err != nil {
		t.Errorf("fail-open: adj %v err %v", adj, err)
	}
	if open.metrics.skips.get(skipInjectionFailed) != 1 || open.metrics.errors.get(stageBundle) != 1 {
		t.Error("fail-open: not counted")
	}
	closed, _ := newTestPlugin(t, failClosed, []byte("not a bundle"))
	if _, _, err := closed.CreateContainer(context.Background(), optedIn(nil), container(testID, "app")); err == nil || !strings.Contains(err.Error(), "fail-closed") {
		t.Errorf("fail-closed: err %v", err)
	}
	if ids, _ := closed.stager.list(); len(ids) != 0 {
		t.Errorf("staged %v without a bundle", ids)
	}
}

func TestBundleRotationKeepsLastGood(t *testing.T) {
	p, caFile := newTestPlugin(t, failClosed, readTestdata(t, "certs/corp-root.pem"))
	stagedSubjects := func(id string) string {
		t.Helper()
		if _, _, err := p.CreateContainer(context.Background(), optedIn(nil), container(id, "app")); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(filepath.Join(p.cfg.dynamicCARoot, id, stagedCA))
		b, _, _ := parseCABundle(data)
		subject, _ := about(b.certs[0])
		return subject
	}
	if s := stagedSubjects(idN(0)); !strings.Contains(s, "Root CA") {
		t.Fatalf("first: %s", s)
	}
	replace := func(data []byte) {
		tmp := caFile + ".new"
		os.WriteFile(tmp, data, 0o644)
		os.Rename(tmp, caFile) // as kubelet swaps a ConfigMap: atomically
	}
	replace(readTestdata(t, "certs/corp-second.pem"))
	if s := stagedSubjects(idN(1)); !strings.Contains(s, "Proxy CA") {
		t.Errorf("after rotation: %s", s)
	}
	replace(readTestdata(t, "bundles/only-private-key.pem"))
	if s := stagedSubjects(idN(2)); !strings.Contains(s, "Proxy CA") {
		t.Errorf("after a broken update: %s, want the last good bundle", s)
	}
	if r := p.bundles.def.snapshot().reloads; r[reasonNoCertificate] != 1 || r["ok"] != 2 {
		t.Errorf("reloads %v", r)
	}
}

func TestHookStatusIsCountedAndStagingRemoved(t *testing.T) {
	p, _ := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	ctx := context.Background()
	for _, id := range []string{idN(0), idN(1)} {
		if _, _, err := p.CreateContainer(ctx, optedIn(nil), container(id, "app")); err != nil {
			t.Fatal(err)
		}
	}
	// The hook reported for the first; the second never ran.
	os.WriteFile(filepath.Join(p.cfg.dynamicCARoot, idN(0), stagedStatus), []byte(`{"result":"ok","family":"debian"}`), 0o644)
	p.PostStartContainer(ctx, nil, container(idN(0), "app"))
	p.RemoveContainer(ctx, nil, container(idN(0), "app"))
	p.RemoveContainer(ctx, nil, container(idN(1), "app"))
	p.drain()
	if p.metrics.hookRuns.get(hookResultOK) != 1 || p.metrics.hookRuns.get(hookResultMissing) != 1 {
		t.Errorf("hook runs ok %d missing %d", p.metrics.hookRuns.get(hookResultOK), p.metrics.hookRuns.get(hookResultMissing))
	}
	if ids, _ := p.stager.list(); len(ids) != 0 || p.activeCount() != 0 || p.metrics.cleanups.get(cleanupRemoved) != 2 {
		t.Errorf("left %v, active %d", ids, p.activeCount())
	}
}

func TestSynchronizeSweepsOrphansAndAdoptsLive(t *testing.T) {
	p, _ := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	for _, id := range []string{idN(0), idN(1)} { // staged by an earlier plugin process
		if _, err := p.stager.stage(id, []byte("ca"), []byte("ca")); err != nil {
			t.Fatal(err)
		}
	}
	p.sweep(nil)
	if ids, _ := p.stager.list(); len(ids) != 2 {
		t.Fatal("swept before knowing which containers live")
	}
	if _, err := p.Synchronize(context.Background(), nil, []*api.Container{{Id: idN(0)}}); err != nil {
		t.Fatal(err)
	}
	p.drain()
	ids, _ := p.stager.list()
	if !slices.Equal(ids, []string{idN(0)}) || p.activeCount() != 1 || p.metrics.cleanups.get(cleanupOrphan) != 1 {
		t.Errorf("after sync: %v active %d", ids, p.activeCount())
	}
	if ok, why := p.registered(); !ok {
		t.Errorf("not registered after Synchronize: %s", why)
	}
}

// Ready means registered AND the default bundle loaded: a forgotten CA
// ConfigMap (the volume is optional) must hold a rollout, not let opted-in
// pods start without the CA. A bundle that breaks later keeps its last
// good version, and the plugin stays ready.
func TestReadyNeedsTheDefaultBundle(t *testing.T) {
	p, caFile := newTestPlugin(t, failOpen, nil)
	if _, err := p.Synchronize(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	p.bundles.refresh()
	ok, why := p.ready()
	if ok || !strings.Contains(why, caFile) || !strings.Contains(why, "no such file") {
		t.Errorf("without a CA file: ready %v: %s", ok, why)
	}
	if err := os.WriteFile(caFile, readTestdata(t, "certs/corp-root.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.bundles.refresh()
	if ok, why := p.ready(); !ok {
		t.Errorf("with the CA file: not ready: %s", why)
	}
	if err := os.WriteFile(caFile, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.bundles.refresh()
	if ok, why := p.ready(); !ok {
		t.Errorf("the last good bundle kept, yet not ready: %s", why)
	}
}

func TestRunRetriesWithoutARuntime(t *testing.T) {
	p, _ := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	p.cfg.socket = filepath.Join(t.TempDir(), "nri.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.run(ctx) // must return only when ctx ends, never crash
	ok, why := p.ready()
	if ok || !strings.Contains(why, "no such file") {
		t.Errorf("ready %v: %s", ok, why)
	}
	if n := p.metrics.errors.get(stageNRI); n < 2 {
		t.Errorf("%d connection attempts counted in 2s", n)
	}
}

func TestRotationRefreshesRunningContainers(t *testing.T) {
	p, caFile := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	ctx := context.Background()
	if _, _, err := p.CreateContainer(ctx, optedIn(nil), container(testID, "app")); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(p.cfg.dynamicCARoot, testID)
	// What the hook leaves: the image's trust, bundle.pem made of it and
	// ours, and its status.
	image := publicBundle(t)
	merged, _ := mergeBundle(image, p.bundles.def.good.ours)
	os.WriteFile(filepath.Join(staging, stagedImageTrust), image, 0o644)
	os.WriteFile(filepath.Join(staging, stagedBundle), merged, 0o644)
	os.WriteFile(filepath.Join(staging, stagedStatus), []byte(`{"result":"ok"}`), 0o644)
	p.PostStartContainer(ctx, nil, container(testID, "app"))
	p.drain()
	if n := p.outdatedCount(); n != 0 {
		t.Fatalf("outdated %d before any rotation", n)
	}

	os.WriteFile(caFile+".new", readTestdata(t, "certs/corp-second.pem"), 0o644)
	os.Rename(caFile+".new", caFile)
	p.refreshStaged()

	second, _, _ := parseCABundle(readTestdata(t, "certs/corp-second.pem"))
	root, _, _ := parseCABundle(readTestdata(t, "certs/corp-root.pem"))
	ca, _ := os.ReadFile(filepath.Join(staging, stagedCA))
	bundle, _ := os.ReadFile(filepath.Join(staging, stagedBundle))
	have := bundleSums(bundle)
	if string(ca) != string(second.pem) || !have[second.certs[0].sum] || have[root.certs[0].sum] || countCerts(bundle) != 4 {
		t.Errorf("after rotation: ca.pem is the new CA: %v; bundle.pem holds the image's 3 and the new CA, not the old: %d certs",
			string(ca) == string(second.pem), countCerts(bundle))
	}
	if n := p.outdatedCount(); n != 1 {
		t.Errorf("outdated %d, want 1: the container's OS store still holds the old CA", n)
	}
}

func TestContainerIDsThatAreNotContainerdsNeverBecomePaths(t *testing.T) {
	for _, policy := range []string{failOpen, failClosed} {
		p, _ := newTestPlugin(t, policy, readTestdata(t, "certs/corp-root.pem"))
		for _, id := range []string{"../../../etc", "", strings.Repeat("a", 63), strings.Repeat("A", 64), testID + "/x", "..", "."} {
			adj, _, err := p.CreateContainer(context.Background(), optedIn(nil), container(id, "app"))
			if adj != nil || (err == nil) != (policy == failOpen) {
				t.Errorf("%s, ID %q: adj %v err %v", policy, id, adj, err)
			}
		}
		entries, _ := os.ReadDir(p.cfg.dynamicCARoot)
		for _, e := range entries {
			if e.Name() != lockName {
				t.Errorf("%s: %s appeared in the dynamic CA root", policy, e.Name())
			}
		}
		if p.activeCount() != 0 {
			t.Errorf("%s: %d containers remembered", policy, p.activeCount())
		}
	}
}

func TestNamedBundles(t *testing.T) {
	dir := t.TempDir()
	// A ConfigMap volume: each key a symlink into ..data.
	writeTree(t, dir, map[string]string{
		"..2026_11_23/tenant-a.pem": string(readTestdata(t, "certs/corp-second.pem")),
		"..data":                    "->..2026_11_23",
		"tenant-a.pem":              "->..data/tenant-a.pem",
	})
	for _, policy := range []string{failOpen, failClosed} {
		p, _ := newTestPlugin(t, policy, readTestdata(t, "certs/corp-root.pem"))
		p.cfg.bundlesDir = dir
		p.bundles = newBundleSet(p.cfg, p.log)
		pick := func(name string) map[string]string { return map[string]string{testPrefix + "/bundle": name} }

		if _, _, err := p.CreateContainer(context.Background(), optedIn(pick("tenant-a")), container(idN(0), "app")); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(filepath.Join(p.cfg.dynamicCARoot, idN(0), stagedCA))
		if string(data) != string(readTestdata(t, "certs/corp-second.pem")) {
			t.Errorf("%s: the container did not get the tenant's bundle", policy)
		}
		for _, name := range []string{"tenant-b", "../tenant-a.pem", "..data", "tenant-a.pem"} {
			adj, _, err := p.CreateContainer(context.Background(), optedIn(pick(name)), container(idN(1), "app"))
			if adj != nil || (err == nil) != (policy == failOpen) || (err != nil && !strings.Contains(err.Error(), "no CA bundle named")) {
				t.Errorf("%s, bundle %q: adj %v err %v", policy, name, adj, err)
			}
		}
		if snaps := p.bundles.snapshots(); len(snaps) != 2 || snaps[1].name != "tenant-a" || len(snaps[1].certs) != 1 {
			t.Errorf("%s: bundles in /metrics: %+v", policy, snaps)
		}
	}
}

// A CA rotation rebuilds each running container's bundle.pem from its
// image part, which the image chose. A hostile one must not stall the
// plugin: while the refresh runs, NRI requests, /metrics and /readyz
// answer within 100 ms (each takes well under a millisecond), and the
// refresh still ends, with every bundle rebuilt.
func TestHostileRefreshDoesNotStallThePlugin(t *testing.T) {
	p, caFile := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	p.connected = true
	ctx := context.Background()
	old, _ := p.bundles.get("")
	hostile := quadraticPEM(nil, old.ours, 1<<20)
	const containers = 16
	for i := range containers {
		id := hexID(i)
		if adj, _, err := p.CreateContainer(ctx, optedIn(nil), container(id, "app")); err != nil || adj == nil {
			t.Fatal("not injected", err)
		}
		staging := filepath.Join(p.cfg.dynamicCARoot, id)
		merged, _ := mergeBundle(hostile, old.ours)
		os.WriteFile(filepath.Join(staging, stagedImageTrust), hostile, 0o644)
		os.WriteFile(filepath.Join(staging, stagedBundle), merged, 0o644)
		os.WriteFile(filepath.Join(staging, stagedStatus), []byte(`{"result":"ok"}`), 0o644)
		p.PostStartContainer(ctx, nil, container(id, "app"))
	}
	p.drain()
	os.WriteFile(caFile+".new", readTestdata(t, "certs/corp-second.pem"), 0o644)
	os.Rename(caFile+".new", caFile)

	server := serveTest(t, p.metrics, p)
	get := func(path string) func(int) {
		return func(int) {
			if resp, err := http.Get(server + path); err != nil || resp.StatusCode != 200 {
				t.Errorf("%s: %v", path, err)
			} else {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); p.refreshStaged() }()
	probes := map[string]func(i int){
		"CreateContainer": func(i int) { p.CreateContainer(ctx, optedIn(nil), container(hexID(containers+i%8), "new")) },
		"/metrics":        get("/metrics"),
		"/readyz":         get("/readyz"),
	}
	for i, running := 0, true; running; i++ {
		select {
		case <-done:
			running = false
		default:
		}
		for name, probe := range probes {
			began := time.Now()
			probe(i)
			if took := time.Since(began); took > 100*time.Millisecond {
				t.Fatalf("%s took %s while a hostile refresh ran", name, took)
			}
		}
	}
	second, _ := p.bundles.get("")
	for i := range containers {
		bundle, _ := os.ReadFile(filepath.Join(p.cfg.dynamicCARoot, hexID(i), stagedBundle))
		if want, _ := mergeBundle(hostile, second.ours); !bytes.Equal(bundle, want) {
			t.Errorf("container %d: bundle.pem is not its image part with the new CAs", i)
		}
	}
}

// hexID is the n-th of any number of valid container IDs.
func hexID(n int) string { return fmt.Sprintf("%064x", n+1) }

// The wrapper stays out of containers that do not need it: once the hook
// of an image's container reported no variable for the wrapper, the next
// containers of that image (same CAs, processors and variables) start
// their command directly, without the wrapper or its mount. One that
// needed it (the JVM fallback store) keeps it for all. A container whose
// injection was its own (the pod's volumes over trust files) teaches none.
func TestWrapperOnlyWhereNeeded(t *testing.T) {
	p, _ := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	ctx := context.Background()
	withImage := func(id, image string, env ...string) *api.Container {
		c := container(id, "app", env...)
		c.Image = &api.Image{ConfigDigest: image}
		return c
	}
	wrapped := func(adj *api.ContainerAdjustment) bool {
		return slices.ContainsFunc(adj.GetMounts(), func(m *api.Mount) bool { return m.Destination == containerWrapper }) &&
			slices.Equal(adj.GetArgs()[:3], []string{containerWrapper, "wrap", "--"})
	}
	start := func(i int, ctr *api.Container, status string) *api.ContainerAdjustment {
		adj, _, err := p.CreateContainer(ctx, optedIn(nil), ctr)
		if err != nil || adj == nil {
			t.Fatal("not injected", err)
		}
		os.WriteFile(filepath.Join(p.cfg.dynamicCARoot, ctr.Id, stagedStatus), []byte(status), 0o644)
		p.PostStartContainer(ctx, nil, ctr)
		p.drain()
		return adj
	}
	plain, java := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	ok, fallback := `{"result":"ok"}`, `{"result":"ok","wrapper":{"append":{"JAVA_TOOL_OPTIONS":"-D"}}}`
	// A container whose volumes made its injection its own teaches nothing.
	start(7, withImage(hexID(7), plain), `{"result":"ok","mounted":true}`)
	if !wrapped(start(0, withImage(hexID(0), plain), ok)) {
		t.Error("the first container of an image must get the wrapper (learnt from the pod's own injection?)")
	}
	if adj := start(1, withImage(hexID(1), plain), ok); wrapped(adj) || len(adj.GetArgs()) != 0 {
		t.Errorf("the next container of an image that needed none got the wrapper: args %v", adj.GetArgs())
	}
	if !wrapped(start(2, withImage(hexID(2), plain, "JAVA_HOME=/opt/jdk"), ok)) {
		t.Error("other variables the injection reads: the wrapper must stay until learned")
	}
	start(3, withImage(hexID(3), java), fallback)
	if !wrapped(start(4, withImage(hexID(4), java), ok)) {
		t.Error("an image whose container needed the wrapper must keep it")
	}
	if !wrapped(start(5, container(hexID(5), "app"), ok)) || !wrapped(start(6, container(hexID(6), "app"), ok)) {
		t.Error("a container the runtime names no image of must always get the wrapper")
	}
}

// A container created before a CA rotation and started after it gets the
// new CAs in its staged files once it started: the worker reads its hook's
// report and refreshes it in one go.
func TestRotationBetweenCreateAndStart(t *testing.T) {
	p, caFile := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	ctx := context.Background()
	if _, _, err := p.CreateContainer(ctx, optedIn(nil), container(testID, "app")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(caFile+".new", readTestdata(t, "certs/corp-second.pem"), 0o644)
	os.Rename(caFile+".new", caFile)
	p.bundles.refresh()
	staging := filepath.Join(p.cfg.dynamicCARoot, testID)
	os.WriteFile(filepath.Join(staging, stagedStatus), []byte(`{"result":"ok"}`), 0o644)
	p.PostStartContainer(ctx, nil, container(testID, "app"))
	p.drain()
	second, _, _ := parseCABundle(readTestdata(t, "certs/corp-second.pem"))
	if ca, _ := os.ReadFile(filepath.Join(staging, stagedCA)); string(ca) != string(second.pem) {
		t.Error("the staged CAs of a container started after a rotation are not the new ones")
	}
}

// A rotation rebuilds bundle.pem from the container's own trust where its
// hook staged it, whatever became of the hook's status: with status.json
// gone (an image once made it too large to write), the rebuilt bundle.pem
// still holds every root the image trusted, and the new CA.
func TestRotationKeepsTheContainersTrustWithoutItsStatus(t *testing.T) {
	p, caFile := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	ctx := context.Background()
	ctr := container(testID, "app")
	adj, _, err := p.CreateContainer(ctx, optedIn(nil), ctr)
	if err != nil || adj == nil {
		t.Fatal("not injected", err)
	}
	// The hook, as runc runs it with the arguments the plugin gave it.
	bed := &hookBed{id: testID, bundle: t.TempDir()}
	bed.rootfs = filepath.Join(bed.bundle, "rootfs")
	if err := os.Rename(copyTree(t, "testdata/rootfs/debian"), bed.rootfs); err != nil {
		t.Fatal(err)
	}
	bed.writeSpec(t)
	imageBundle := bed.read(t, filepath.Join(bed.rootfs, "etc/ssl/certs/ca-certificates.crt"))
	if code := runHook(adj.GetHooks().GetCreateRuntime()[0].Args[2:], bytes.NewReader(bed.state()), io.Discard, io.Discard); code != 0 {
		t.Fatalf("hook exit %d", code)
	}
	staging := filepath.Join(p.cfg.dynamicCARoot, testID)
	if err := os.Remove(filepath.Join(staging, stagedStatus)); err != nil {
		t.Fatal(err)
	}
	p.PostStartContainer(ctx, nil, ctr)
	p.drain()

	os.WriteFile(caFile+".new", readTestdata(t, "certs/corp-second.pem"), 0o644)
	os.Rename(caFile+".new", caFile)
	p.refreshStaged()
	second, _ := p.bundles.get("")
	bundle, _ := os.ReadFile(filepath.Join(staging, stagedBundle))
	if want, _ := mergeBundle(imageBundle, second.ours); !bytes.Equal(bundle, want) {
		t.Errorf("bundle.pem after the rotation holds %d certificates, not the image's %d and the new CA", countCerts(bundle), countCerts(imageBundle))
	}
}

// What the runtime offers, the plugin learns as it goes and says: a
// runtime that names no image config digest (containerd 1.7 and 2.2,
// CRI-O) makes every injected container start through the wrapper, and
// the log, /metrics and doctor's line say why.
func TestRuntimeWithoutImageDigests(t *testing.T) {
	p, _ := newTestPlugin(t, failOpen, readTestdata(t, "certs/corp-root.pem"))
	var logs strings.Builder
	p.log = newLogger(&logs, "text", 0)
	p.runtime = runtimeInfo{name: "cri-o", version: "1.34.0"}
	ctx := context.Background()
	for i := range 2 {
		adj, _, err := p.CreateContainer(ctx, optedIn(nil), container(hexID(i), "app"))
		if err != nil || adj == nil || len(adj.GetArgs()) == 0 || adj.GetArgs()[0] != containerWrapper {
			t.Fatalf("container %d: not injected through the wrapper: %v %v", i, adj.GetArgs(), err)
		}
		os.WriteFile(filepath.Join(p.cfg.dynamicCARoot, hexID(i), stagedStatus), []byte(`{"result":"ok"}`), 0o644)
		p.PostStartContainer(ctx, nil, container(hexID(i), "app"))
		p.drain()
	}
	if n := strings.Count(logs.String(), "names no image config digest"); n != 1 {
		t.Errorf("said %d times that the runtime names no image config digest, want once:\n%s", n, logs.String())
	}
	var out strings.Builder
	p.metrics.write(&out)
	if want := `cainjekt_runtime_info{runtime="cri-o",version="1.34.0",nri_version="unknown",image_digests="no"} 1`; !strings.Contains(out.String(), want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if s := p.runtimeInfo().String(); !strings.Contains(s, "cri-o 1.34.0") || !strings.Contains(s, "every injected container starts through the wrapper") {
		t.Errorf("doctor's line: %s", s)
	}
	if got := digestsOf([]*api.Container{container(hexID(0), "a"), {Image: &api.Image{ConfigDigest: "sha256:" + strings.Repeat("1", 64)}}}); got != "yes" {
		t.Errorf("digestsOf a runtime that names one: %q", got)
	}
}
