//go:build !hookonly

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/nri/pkg/api"
)

// newTestRecorder returns a recorder that posts to f as node-1, on a clock
// the test moves, logging at debug level into the buffer.
func newTestRecorder(t *testing.T, f *fakeAPIServer) (*eventRecorder, *time.Time, *bytes.Buffer) {
	t.Helper()
	k, _, m := newTestKubeClient(t, f)
	var logs bytes.Buffer
	r := newEventRecorder(k, "node-1", newLogger(&logs, "text", slog.LevelDebug), m)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.now = func() time.Time { return now }
	return r, &now, &logs
}

// postQueued posts what the queue holds, as run does.
func postQueued(r *eventRecorder) {
	for len(r.queue) > 0 {
		r.handle(context.Background(), <-r.queue)
	}
}

var shopWeb = podRef{namespace: "shop", name: "web", uid: "6a8f1d62-5d1c-4c39-9d3e-2f1b6a0d7e11"}

// decoded is a posted event's JSON, decoded loosely.
func decoded(t *testing.T, e postedEvent) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(e.body, &m); err != nil {
		t.Fatalf("%s: %v\n%s", e.path, err, e.body)
	}
	return m
}

func TestPodEventIsACoreV1EventOnThePod(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	r, _, logs := newTestRecorder(t, f)
	r.record(shopWeb, eventUnknownBundle, `no CA bundle named "tenant-b"`)
	postQueued(r)
	posted := f.events()
	if len(posted) != 1 || posted[0].path != "/api/v1/namespaces/shop/events" || posted[0].contentType != "application/json" {
		t.Fatalf("posted %+v", posted)
	}
	var want map[string]any
	json.Unmarshal([]byte(`{"apiVersion": "v1", "kind": "Event",
		"metadata": {"generateName": "web.", "namespace": "shop"},
		"involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web", "uid": "6a8f1d62-5d1c-4c39-9d3e-2f1b6a0d7e11"},
		"reason": "UnknownBundle", "message": "no CA bundle named \"tenant-b\"", "type": "Warning", "count": 1,
		"firstTimestamp": "2026-01-02T03:04:05Z", "lastTimestamp": "2026-01-02T03:04:05Z",
		"source": {"component": "cainjekt", "host": "node-1"},
		"reportingComponent": "cainjekt", "reportingInstance": "node-1"}`), &want)
	if got := decoded(t, posted[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("posted\n%s\nwant\n%v", posted[0].body, want)
	}
	if r.metrics.events.get(eventPosted) != 1 || !strings.Contains(logs.String(), "level=DEBUG msg=\"posted a pod event\"") {
		t.Errorf("posted %d; log:\n%s", r.metrics.events.get(eventPosted), logs)
	}
}

// The same event of a pod within the window is counted, not posted; the
// next one after the window says how many it stands for, and since when.
func TestPodEventRepeatsAreAggregated(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	r, now, _ := newTestRecorder(t, f)
	start := *now
	for _, at := range []time.Duration{0, time.Minute, 2 * time.Minute} {
		*now = start.Add(at)
		r.record(shopWeb, eventUnknownAnnotation, "same")
	}
	r.record(shopWeb, eventUnknownAnnotation, "other")                                           // another message
	r.record(podRef{namespace: "shop", name: "web-2", uid: "b"}, eventUnknownAnnotation, "same") // another pod
	postQueued(r)
	if n := len(f.events()); n != 3 || r.metrics.events.get(eventAggregated) != 2 {
		t.Fatalf("posted %d, aggregated %d; want 3 and 2", n, r.metrics.events.get(eventAggregated))
	}
	*now = start.Add(eventAggregateWindow)
	r.record(shopWeb, eventUnknownAnnotation, "same")
	postQueued(r)
	posted := f.events()
	if len(posted) != 4 {
		t.Fatalf("after the window: posted %d, want 4", len(posted))
	}
	last := decoded(t, posted[3])
	if last["count"] != 3.0 || last["firstTimestamp"] != "2026-01-02T03:05:05Z" || last["lastTimestamp"] != "2026-01-02T03:14:05Z" || last["message"] != "same" {
		t.Errorf("the event after the window: count %v from %v to %v, want 3 from the first repeat to now", last["count"], last["firstTimestamp"], last["lastTimestamp"])
	}
}

func TestPodEventsAreRateLimited(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	r, now, _ := newTestRecorder(t, f)
	for i := range podEventBurst + 2 {
		r.record(shopWeb, eventInjectionFailed, fmt.Sprintf("container %d", i))
	}
	postQueued(r)
	if n := len(f.events()); n != podEventBurst || r.metrics.events.get(eventRateLimited) != 2 {
		t.Errorf("one pod: posted %d, rate limited %d; want %d and 2", n, r.metrics.events.get(eventRateLimited), podEventBurst)
	}
	*now = now.Add(time.Minute) // a token more
	r.record(shopWeb, eventInjectionFailed, "a minute later")
	r.record(shopWeb, eventInjectionFailed, "and again")
	postQueued(r)
	if n := len(f.events()); n != podEventBurst+1 || r.metrics.events.get(eventRateLimited) != 3 {
		t.Errorf("a minute later: posted %d, rate limited %d; want %d and 3", n, r.metrics.events.get(eventRateLimited), podEventBurst+1)
	}

	f = newFakeAPIServer(t, nil)
	r, _, _ = newTestRecorder(t, f)
	for i := range nodeEventBurst + 5 {
		r.record(podRef{namespace: "shop", name: fmt.Sprintf("web-%d", i), uid: fmt.Sprint(i)}, eventUnknownAnnotation, "typo")
	}
	postQueued(r)
	if n := len(f.events()); n != nodeEventBurst || r.metrics.events.get(eventRateLimited) != 5 {
		t.Errorf("the node: posted %d, rate limited %d; want %d and 5", n, r.metrics.events.get(eventRateLimited), nodeEventBurst)
	}
}

// record never blocks: with the poster stuck, a full queue drops and counts.
func TestPodEventQueueIsBounded(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	r, _, _ := newTestRecorder(t, f)
	for i := range eventQueueSize + 10 {
		r.record(shopWeb, eventInjectionFailed, fmt.Sprint(i))
	}
	if len(r.queue) != eventQueueSize || r.metrics.events.get(eventQueueFull) != 10 {
		t.Errorf("queued %d, dropped %d", len(r.queue), r.metrics.events.get(eventQueueFull))
	}
}

// An API server that refuses events gets one warning, with its reason,
// until a post works again; each failure is counted.
func TestPodEventFailuresAreLoggedOnce(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	r, _, logs := newTestRecorder(t, f)
	warnings := func() int { return strings.Count(logs.String(), "level=WARN") }
	f.refuseEvents.Store(true)
	for i := range 3 {
		r.record(shopWeb, eventInjectionFailed, fmt.Sprint(i))
	}
	postQueued(r)
	if warnings() != 1 || r.metrics.events.get(eventFailed) != 3 || !strings.Contains(logs.String(), `cannot create resource \"events\"`) {
		t.Errorf("%d warnings, %d failures counted:\n%s", warnings(), r.metrics.events.get(eventFailed), logs)
	}
	f.refuseEvents.Store(false)
	r.record(podRef{namespace: "shop", name: "web-2", uid: "b"}, eventInjectionFailed, "works again")
	f.refuseEvents.Store(true)
	postQueued(r)
	f.refuseEvents.Store(false)
	r.record(podRef{namespace: "shop", name: "web-2", uid: "b"}, eventInjectionFailed, "works again")
	postQueued(r)
	f.refuseEvents.Store(true)
	r.record(podRef{namespace: "shop", name: "web-3", uid: "c"}, eventInjectionFailed, "fails again")
	postQueued(r)
	if warnings() != 2 || !strings.Contains(logs.String(), "posting pod events again") || r.metrics.events.get(eventPosted) != 1 {
		t.Errorf("after a success and a new failure: %d warnings, %d posted:\n%s", warnings(), r.metrics.events.get(eventPosted), logs)
	}
}

// testPlugin returns a plugin whose events go to f.
func testPluginWithEvents(t *testing.T, policy string, f *fakeAPIServer) *plugin {
	t.Helper()
	p, _ := newTestPlugin(t, policy, readTestdata(t, "certs/corp-root.pem"))
	r, _, _ := newTestRecorder(t, f)
	r.metrics = p.metrics
	p.events = r
	return p
}

func podOf(name string, ann map[string]string) *api.PodSandbox {
	return &api.PodSandbox{Id: "sandbox-" + name, Name: name, Namespace: "shop", Uid: "uid-" + name, Annotations: ann}
}

// postedSummary lists the events posted as "pod reason: message", sorted.
func postedSummary(t *testing.T, f *fakeAPIServer) []string {
	t.Helper()
	var out []string
	for _, e := range f.events() {
		m := decoded(t, e)
		out = append(out, fmt.Sprintf("%s %s: %s", get(m, "involvedObject", "name"), m["reason"], m["message"]))
	}
	slices.Sort(out)
	return out
}

func get(v any, keys ...string) any {
	for _, k := range keys {
		v = v.(map[string]any)[k]
	}
	return v
}

// What the plugin decides at CreateContainer reaches the pod as events:
// annotation warnings once per pod, whatever its containers; bundles that
// do not exist; processor lists that leave none. A pod that says nothing,
// or whose namespace could not be looked up, gets none.
func TestCreateContainerTellsThePod(t *testing.T) {
	for _, policy := range []string{failOpen, failClosed} {
		f := newFakeAPIServer(t, nil)
		p := testPluginWithEvents(t, policy, f)
		p.policy.namespace = func(string) (*namespaceInfo, error) { return nil, fmt.Errorf("403 Forbidden") }
		ctx := context.Background()
		typo := podOf("typo", map[string]string{testPrefix + "/enable": "true"})
		for i, name := range []string{"app", "sidecar"} {
			p.CreateContainer(ctx, typo, container(idN(i), name))
		}
		p.CreateContainer(ctx, podOf("bundle", map[string]string{testPrefix + "/enabled": "true", testPrefix + "/bundle": "tenant-b"}), container(idN(2), "app"))
		p.CreateContainer(ctx, podOf("cobol", map[string]string{testPrefix + "/enabled": "true", testPrefix + "/processors.include": "lang-cobol"}), container(idN(3), "app"))
		p.CreateContainer(ctx, podOf("plain", nil), container(idN(4), "app"))
		postQueued(p.events)
		outcome := "the container starts without it (fail-open)"
		if policy == failClosed {
			outcome = "the container does not start (fail-closed)"
		}
		want := []string{
			`bundle UnknownBundle: CA injection of container "app" failed, ` + outcome + `: no CA bundle named "tenant-b": no bundles directory is configured (CAINJEKT_BUNDLES_DIR)`,
			"cobol CAInjectionSkipped: the pod's processors.include and processors.exclude annotations leave no processor: its containers are not injected",
			`cobol UnknownProcessor: unknown processor "lang-cobol" in cainjekt.natron.io annotations (known: ` + strings.Join(processorNames, ", ") + ")",
			`typo UnknownAnnotation: unknown annotation "cainjekt.natron.io/enable": did you mean "cainjekt.natron.io/enabled"?`,
		}
		if got := postedSummary(t, f); !slices.Equal(got, want) {
			t.Errorf("%s: posted\n%s\nwant\n%s", policy, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if p.metrics.events.get(eventAggregated) != 1 {
			t.Errorf("%s: the typo of the second container was not aggregated: %d", policy, p.metrics.events.get(eventAggregated))
		}
	}
}

// What the hook reported reaches the pod too, once the worker reads it: a
// failure, a report missing, a volume over a trust file; of a container
// adopted from an earlier plugin process too, its pod as the runtime named it.
func TestHookOutcomesTellThePod(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	p := testPluginWithEvents(t, failOpen, f)
	ctx := context.Background()
	statuses := map[string]string{
		"failed":  `{"result":"failed","errors":["merge /etc/ssl/certs/ca-certificates.crt: \u202einjected\nline"]}`,
		"mounted": `{"result":"ok","mounted":true,"files":[{"path":"/etc/ssl/certs/ca-certificates.crt","action":"mounted"},{"path":"/etc/ssl/cert.pem","action":"merged"}]}`,
		"fine":    `{"result":"ok"}`,
		"missing": "",
	}
	i := 0
	for name, status := range statuses {
		id := idN(i)
		i++
		if _, _, err := p.CreateContainer(ctx, podOf(name, map[string]string{testPrefix + "/enabled": "true"}), container(id, "app")); err != nil {
			t.Fatal(err)
		}
		if status != "" {
			os.WriteFile(filepath.Join(p.cfg.dynamicCARoot, id, stagedStatus), []byte(status), 0o644)
			p.PostStartContainer(ctx, nil, container(id, "app"))
		} else {
			p.RemoveContainer(ctx, nil, container(id, "app"))
		}
	}
	p.drain()
	// Adopted while their hooks ran, one of a pod the runtime names: the
	// statuses hold no pod UID. The other's pod is unknown: no event.
	adopted, unnamed := idN(i), idN(i+1)
	for _, id := range []string{adopted, unnamed} {
		p.stager.stage(id, []byte("ca"), []byte("ca"))
	}
	p.Synchronize(ctx, []*api.PodSandbox{podOf("old", nil)}, []*api.Container{{Id: adopted, PodSandboxId: "sandbox-old", Name: "app"}, {Id: unnamed, PodSandboxId: "gone"}})
	p.drain()
	for _, id := range []string{adopted, unnamed} {
		os.WriteFile(filepath.Join(p.cfg.dynamicCARoot, id, stagedStatus), []byte(`{"result":"failed","namespace":"shop","pod":"old"}`), 0o644)
		p.RemoveContainer(ctx, nil, container(id, "app"))
	}
	p.drain()
	if n := p.metrics.hookRuns.get(hookResultFailed); n != 3 {
		t.Fatalf("%d failed hooks read, want 3: the adopted containers' too", n)
	}
	postQueued(p.events)
	want := []string{
		`failed CAInjectionFailed: CA injection of container "app" failed (failed), the container starts without it (fail-open): "merge /etc/ssl/certs/ca-certificates.crt: injectedline"`,
		`missing CAInjectionFailed: the CA injection hook of container "app" left no report: it did not run, or was killed`,
		`mounted TrustFileShadowed: container "app": the pod's volumes are over trust files, which CA injection leaves as they are: "/etc/ssl/certs/ca-certificates.crt". ` +
			"Programs that read them trust what the pod put there only; those that read SSL_CERT_FILE and the other trust variables trust that and the injected CAs",
		`old CAInjectionFailed: CA injection of container "app" failed (failed), the container starts without it (fail-open): see /etc/cainjekt/status.json in the container`,
	}
	if got := postedSummary(t, f); !slices.Equal(got, want) {
		t.Errorf("posted\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Annotation keys and values are the pod's to choose: an event quotes
// them, clipped, printable, and fits events.k8s.io's 1 KiB whatever the
// pod holds. Pods that an event cannot name get none.
func TestPodEventsAreBounded(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	p := testPluginWithEvents(t, failOpen, f)
	ann := map[string]string{}
	for i := range 200 {
		ann[fmt.Sprintf("%s/x%d-\u202e\n\x1b[31m%s", testPrefix, i, strings.Repeat("é", 2000))] = "true"
	}
	p.CreateContainer(context.Background(), podOf("hostile", ann), container(idN(0), "app"))
	for _, bad := range []podRef{{namespace: "shop", name: "web"}, {namespace: "Shop", name: "web", uid: "u"},
		{namespace: "shop", name: "web\n", uid: "u"}, {namespace: "shop", name: "web", uid: strings.Repeat("u", 65)}} {
		p.events.record(bad, eventInjectionFailed, "unaddressed")
	}
	postQueued(p.events)
	posted := f.events()
	if len(posted) != 1 {
		t.Fatalf("posted %d events, want the hostile pod's one", len(posted))
	}
	msg := decoded(t, posted[0])["message"].(string)
	if len(msg) > eventMessageMax || !utf8.ValidString(msg) || !strings.HasSuffix(msg, "…") ||
		strings.ContainsFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
		t.Errorf("message of %d bytes: %q", len(msg), msg)
	}
}

// What the poster remembers stays under maxEventKeys: past windows and
// refilled buckets go first, everything if that is not enough.
func TestPodEventMemoryIsBounded(t *testing.T) {
	f := newFakeAPIServer(t, nil)
	r, now, _ := newTestRecorder(t, f)
	fill := func() { // each pod's bucket drained, each event's window open
		clear(r.recent)
		clear(r.pods)
		for i := range maxEventKeys {
			r.remember(eventKey{uid: fmt.Sprint(i)}, &recentEvent{posted: *now})
			r.pods[fmt.Sprint(i)] = &tokenBucket{last: *now}
		}
	}
	fill()
	r.remember(eventKey{uid: "new"}, &recentEvent{posted: *now})
	r.allow("new", *now)
	if len(r.recent) != 1 || len(r.pods) != 1 {
		t.Errorf("full of current entries: remembers %d events and %d pods, want the new one only", len(r.recent), len(r.pods))
	}
	fill()
	*now = now.Add(eventAggregateWindow) // every window past, every bucket full again
	r.remember(eventKey{uid: "0"}, &recentEvent{posted: *now})
	r.pods["0"] = &tokenBucket{last: *now}
	r.remember(eventKey{uid: "new"}, &recentEvent{posted: *now})
	r.allow("new", *now)
	if len(r.recent) != 2 || len(r.pods) != 2 {
		t.Errorf("full of old entries but one: remembers %d events and %d pods, want 2 and 2", len(r.recent), len(r.pods))
	}
}
