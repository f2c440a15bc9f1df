//go:build !hookonly

package main

// Pod events: what a pod's owner should know of its injection (a misspelt
// annotation, a bundle that does not exist, a failed injection, a volume
// over a trust file) as a Kubernetes Event on the pod, where `kubectl
// describe pod` shows it, beside the kubelet's own.
//
// The NRI callbacks and the worker only enqueue, never wait: one goroutine
// posts, through the namespace lookups' client (kube.go). Everything is
// bounded: the queue (full, an event is dropped and counted), the rate
// (a token bucket per pod and one for the node), the fields (a message of
// at most 1 KiB, of values quoted and clipped where they are made), and
// what is remembered (at most maxEventKeys pods and events).
//
// core/v1 Events, not events.k8s.io/v1: a core/v1 Event can be created
// with its count and first and last times, so that repeats are aggregated
// into the next one without ever changing an Event. The ClusterRole then
// needs create on events, not patch, which would let the plugin rewrite
// any Event of the cluster. `kubectl describe pod` shows both kinds.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/containerd/nri/pkg/api"
)

// Event reasons, as `kubectl describe pod` and `kubectl get events` show them.
const (
	eventUnknownAnnotation = "UnknownAnnotation"  // a misspelt key
	eventUnknownProcessor  = "UnknownProcessor"   // a processor list names one that does not exist
	eventInvalidAnnotation = "InvalidAnnotation"  // a value cainjekt cannot use
	eventUnknownBundle     = "UnknownBundle"      // the pod or its namespace names a bundle that does not exist
	eventInjectionSkipped  = "CAInjectionSkipped" // the pod's own lists leave no processor
	eventInjectionFailed   = "CAInjectionFailed"  // the plugin or the hook failed
	eventTrustFileShadowed = "TrustFileShadowed"  // a volume of the pod is over a trust file
)

// Event outcomes, as cainjekt_pod_events_total labels them.
const (
	eventPosted      = "posted"
	eventAggregated  = "aggregated"   // a repeat within eventAggregateWindow: counted in the next one posted
	eventRateLimited = "rate_limited" // over the pod's or the node's rate
	eventQueueFull   = "queue_full"
	eventFailed      = "failed" // the API server refused it or could not be reached
)

var eventResults = []string{eventPosted, eventAggregated, eventRateLimited, eventQueueFull, eventFailed}

const (
	eventQueueSize = 256
	// eventMessageMax is events.k8s.io's limit on a note, kept for core/v1
	// too: `kubectl describe` prints the message on one line.
	eventMessageMax = 1024
	// An event of the same pod, reason and message within the window is
	// not posted again; the next one after it says how many it stands for.
	eventAggregateWindow = 10 * time.Minute
	// A pod may post podEventBurst events at once, then one a minute; the
	// node nodeEventBurst, then one a second.
	podEventBurst, podEventRate   = 5, 1.0 / 60
	nodeEventBurst, nodeEventRate = 25, 1.0
	eventTimeout                  = 5 * time.Second
	// A node runs at most a few hundred pods; each remembered event holds
	// up to a message, 1 KiB.
	maxEventKeys   = 1024
	eventComponent = "cainjekt"
)

// podRef names the pod an event is about.
type podRef struct{ namespace, name, uid string }

func refOf(pod *api.PodSandbox) podRef {
	return podRef{namespace: pod.GetNamespace(), name: pod.GetName(), uid: pod.GetUid()}
}

// valid says whether the ref can name a pod in an Event: kubectl finds a
// pod's events by its namespace, name and UID.
func (r podRef) valid() bool {
	return dnsLabel(r.namespace) && r.name != "" && len(r.name) <= 253 && r.uid != "" && len(r.uid) <= 64 &&
		printable(r.name, 253) == r.name && printable(r.uid, 64) == r.uid
}

// podEvent is one occurrence, as the callbacks enqueue it.
type podEvent struct {
	pod             podRef
	reason, message string
	at              time.Time
}

// eventKey is what makes occurrences the same event.
type eventKey struct{ uid, reason, message string }

// recentEvent is what the poster remembers of an event it posted.
type recentEvent struct {
	posted  time.Time
	repeats int       // occurrences since, not posted
	first   time.Time // the first of them
}

// eventRecorder queues pod events and posts them.
type eventRecorder struct {
	kube    *kubeClient
	host    string // the node's name, the events' source; "" if unknown
	log     *slog.Logger
	metrics *metrics
	queue   chan podEvent
	now     func() time.Time

	// The poster's own, touched by run alone.
	node    tokenBucket             // the node's rate
	pods    map[string]*tokenBucket // each pod's, by UID
	recent  map[eventKey]*recentEvent
	failing bool // the last post failed, and the log said so
}

func newEventRecorder(kube *kubeClient, host string, log *slog.Logger, m *metrics) *eventRecorder {
	return &eventRecorder{kube: kube, host: host, log: log, metrics: m, queue: make(chan podEvent, eventQueueSize),
		now: time.Now, pods: map[string]*tokenBucket{}, recent: map[eventKey]*recentEvent{}}
}

// record enqueues an event about pod; it never blocks. A nil recorder
// (no API server) records nothing.
func (r *eventRecorder) record(pod podRef, reason, message string) {
	if r == nil || !pod.valid() {
		return
	}
	select {
	case r.queue <- podEvent{pod: pod, reason: reason, message: eventText(message), at: r.now()}:
	default:
		r.metrics.events.inc(eventQueueFull)
	}
}

// eventText makes a message fit an Event: printable, one line, at most
// eventMessageMax bytes (printable may pass its bound by a rune's 3 more),
// marked where it was cut.
func eventText(v string) string {
	if c := printable(v, eventMessageMax-len("…")-3); len(c) < len(v) {
		return c + "…"
	}
	return v
}

// run posts the queued events until ctx ends.
func (r *eventRecorder) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-r.queue:
			r.handle(ctx, e)
		}
	}
}

// handle posts an event, unless it repeats one posted within the window
// or goes over the rate.
func (r *eventRecorder) handle(ctx context.Context, e podEvent) {
	key := eventKey{e.pod.uid, e.reason, e.message}
	prev := r.recent[key]
	if prev != nil && e.at.Sub(prev.posted) < eventAggregateWindow {
		if prev.repeats == 0 {
			prev.first = e.at
		}
		prev.repeats++
		r.metrics.events.inc(eventAggregated)
		return
	}
	count, first := 1, e.at
	if prev != nil && prev.repeats > 0 {
		count, first = prev.repeats+1, prev.first
	}
	if !r.allow(e.pod.uid, e.at) {
		r.metrics.events.inc(eventRateLimited)
		return
	}
	if err := r.post(ctx, e, count, first); err != nil {
		r.metrics.events.inc(eventFailed)
		r.postFailed(e, err)
		return
	}
	r.metrics.events.inc(eventPosted)
	if r.failing {
		r.log.Info("posting pod events again")
		r.failing = false
	}
	r.log.Debug("posted a pod event", "namespace", e.pod.namespace, "pod", e.pod.name, "reason", e.reason, "count", count)
	r.remember(key, &recentEvent{posted: e.at})
}

// postFailed logs a failure once, until posting works again: an API
// server that refuses every event must not double the plugin's log.
func (r *eventRecorder) postFailed(e podEvent, err error) {
	if r.failing {
		r.log.Debug("could not post a pod event", "namespace", e.pod.namespace, "pod", e.pod.name, "reason", e.reason, "error", err)
		return
	}
	r.failing = true
	r.log.Warn("could not post a pod event; further failures are logged at debug level until one succeeds",
		"namespace", e.pod.namespace, "pod", e.pod.name, "reason", e.reason, "error", err)
}

// allow takes a token of the pod's bucket and of the node's, if both have one.
func (r *eventRecorder) allow(uid string, now time.Time) bool {
	pod := r.pods[uid]
	if pod == nil {
		bound(r.pods, func(b *tokenBucket) bool { // full again: as good as new
			b.refill(now, podEventBurst, podEventRate)
			return b.tokens >= podEventBurst
		})
		pod = &tokenBucket{}
		r.pods[uid] = pod
	}
	pod.refill(now, podEventBurst, podEventRate)
	r.node.refill(now, nodeEventBurst, nodeEventRate)
	if pod.tokens < 1 || r.node.tokens < 1 {
		return false
	}
	pod.tokens--
	r.node.tokens--
	return true
}

func (r *eventRecorder) remember(key eventKey, e *recentEvent) {
	if _, known := r.recent[key]; !known {
		bound(r.recent, func(old *recentEvent) bool { return e.posted.Sub(old.posted) >= eventAggregateWindow })
	}
	r.recent[key] = e
}

// bound makes room in m for a new key, keeping it under maxEventKeys: it
// forgets what no longer matters, then, if that is not enough, everything,
// which costs at most some repeats posted.
func bound[K comparable, V any](m map[K]V, stale func(V) bool) {
	if len(m) < maxEventKeys {
		return
	}
	maps.DeleteFunc(m, func(_ K, v V) bool { return stale(v) })
	if len(m) >= maxEventKeys {
		clear(m)
	}
}

// tokenBucket is a rate limit: tokens refill at a rate per second, up to a
// burst; a new bucket is full.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) refill(now time.Time, burst, rate float64) {
	switch {
	case b.last.IsZero():
		b.tokens, b.last = burst, now
	case now.After(b.last):
		b.tokens, b.last = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate), now
	}
}

// coreEvent is a core/v1 Event, as much of it as cainjekt sets.
type coreEvent struct {
	APIVersion         string      `json:"apiVersion"`
	Kind               string      `json:"kind"`
	Metadata           eventMeta   `json:"metadata"`
	InvolvedObject     eventObject `json:"involvedObject"`
	Reason             string      `json:"reason"`
	Message            string      `json:"message"`
	Type               string      `json:"type"`
	Count              int         `json:"count"`
	FirstTimestamp     string      `json:"firstTimestamp"`
	LastTimestamp      string      `json:"lastTimestamp"`
	Source             eventSource `json:"source"`
	ReportingComponent string      `json:"reportingComponent"`
	ReportingInstance  string      `json:"reportingInstance,omitempty"`
}

type eventMeta struct {
	// GenerateName: the API server appends a random suffix, cutting the
	// pod's name to fit.
	GenerateName string `json:"generateName"`
	Namespace    string `json:"namespace"`
}

type eventObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
}

type eventSource struct {
	Component string `json:"component"`
	Host      string `json:"host,omitempty"`
}

// post creates the Event of e, standing for count occurrences since first.
func (r *eventRecorder) post(ctx context.Context, e podEvent, count int, first time.Time) error {
	body, err := json.Marshal(coreEvent{
		APIVersion:     "v1",
		Kind:           "Event",
		Metadata:       eventMeta{GenerateName: e.pod.name + ".", Namespace: e.pod.namespace},
		InvolvedObject: eventObject{APIVersion: "v1", Kind: "Pod", Namespace: e.pod.namespace, Name: e.pod.name, UID: e.pod.uid},
		Reason:         e.reason,
		Message:        e.message,
		// Every reason is something the pod's owner should act on.
		Type:               "Warning",
		Count:              count,
		FirstTimestamp:     kubeTime(first),
		LastTimestamp:      kubeTime(e.at),
		Source:             eventSource{Component: eventComponent, Host: r.host},
		ReportingComponent: eventComponent,
		ReportingInstance:  r.host,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	resp, answer, err := r.kube.call(ctx, http.MethodPost, "/api/v1/namespaces/"+e.pod.namespace+"/events", body)
	if err != nil {
		return fmt.Errorf("post event: %w", err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("post event: %s: %s", resp.Status, statusMessage(answer))
	}
	return nil
}

// kubeTime renders a time as metav1.Time does: RFC 3339, in seconds.
func kubeTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// statusMessage is the message of the API server's Status answer, which
// says why (a 403 names the verb, resource and namespace refused).
func statusMessage(body []byte) string {
	var st struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) != nil || st.Message == "" {
		return "no reason given"
	}
	return printable(st.Message, 512)
}

// annotationEvents records a container's annotation warnings, one event
// per reason. They are the pod's, the same for each of its containers:
// the message names none, so that they aggregate into one event.
func (r *eventRecorder) annotationEvents(pod podRef, warnings []annotationWarning) {
	if r == nil || len(warnings) == 0 {
		return
	}
	byReason := map[string][]string{}
	for _, w := range warnings {
		if reason := warningReasons[w.kind]; reason != "" {
			byReason[reason] = append(byReason[reason], w.msg)
		}
	}
	for reason, msgs := range byReason {
		// The same text for the same annotations, whatever order the
		// pod's annotation map gave them in.
		slices.Sort(msgs)
		r.record(pod, reason, strings.Join(slices.Compact(msgs), "; "))
	}
}

// warningReasons maps annotation warnings to event reasons. A failed
// namespace lookup has none: it is the operator's to fix, said by the log,
// the metric and an alert, and it would be every pod's of the node.
var warningReasons = map[string]string{
	warnTypo:             eventUnknownAnnotation,
	warnUnknownProcessor: eventUnknownProcessor,
	warnTooLong:          eventInvalidAnnotation,
	warnInvalidValue:     eventInvalidAnnotation,
}

// failPolicyOutcome says what a failed injection means for the container.
func failPolicyOutcome(policy string) string {
	if policy == failClosed {
		return "the container does not start (fail-closed)"
	}
	return "the container starts without it (fail-open)"
}

// mountedTrustFiles lists, quoted, the first trust files of a hook's
// report that a volume of the pod was over.
func mountedTrustFiles(st *hookStatus) string {
	var paths []string
	for _, f := range st.Files {
		if f.Action == actionMounted && len(paths) < 4 {
			paths = append(paths, fmt.Sprintf("%q", printable(f.Path, 128)))
		}
	}
	if len(paths) == 0 {
		return "see /etc/cainjekt/status.json in the container"
	}
	return strings.Join(paths, ", ")
}

// firstError is the first error of a hook's report, clipped, or where to
// find the others.
func firstError(st *hookStatus) string {
	if len(st.Errors) == 0 {
		return "see /etc/cainjekt/status.json in the container"
	}
	return fmt.Sprintf("%q", printable(st.Errors[0], 256))
}
