//go:build !hookonly

package main

// The NRI plugin: decides per container, stages the trust files, adjusts the
// container (hook, mounts, wrapper, env), and keeps its connection to the
// runtime alive across runtime restarts.
//
// The NRI callbacks only decide, stage our own files and take notes: what
// the hook or the image wrote (status.json, the image's part of bundle.pem)
// is read by one background worker, never under the plugin's lock, each
// piece of work bounded in size and time. A hostile container can then
// delay nothing but its own refresh: not another container's creation, not
// an NRI answer, not /readyz or /metrics.

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

const (
	cleanupRemoved = "removed" // the runtime removed the container
	cleanupOrphan  = "orphan"  // found without a live container, by a sweep

	reconnectMin = 250 * time.Millisecond
	reconnectMax = 10 * time.Second
	// A connection that lasted this long was healthy: the next retry starts
	// from reconnectMin again.
	healthyConnection = 30 * time.Second
	// refreshTimeout bounds the refresh of one container's staged files.
	refreshTimeout = 2 * time.Second
)

// work is what the worker has to do for a container, as the NRI callbacks
// noted it.
type work uint8

const (
	workCollect work = 1 << iota // read, count and log the hook's report
	workRefresh                  // bring the staged trust files up to the current CAs
	workRemove                   // remove the staging directory: the container is gone
)

// hookEnv is the environment of the hook process. Without it the hook would
// inherit the shim's. GOMAXPROCS=1: the hook does one thing at a time, and
// a Go process with one P starts fewer threads, 0.3 ms of CPU sooner, and
// competes less with the runtime on a node starting many containers.
var hookEnv = []string{hookPATH, "GOMAXPROCS=1"}

// hookPATH is the usual PATH, which the hook sees too.
const hookPATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// injectedContainer is what the plugin remembers of a container it injected,
// until the runtime removes it.
type injectedContainer struct {
	namespace, pod, container string
	podUID                    string // "" if the runtime named no pod: its events cannot name it
	bundle                    string // the CA bundle's name
	hookReported              bool
	// injectedSHA names the CA bundle the container started with: its OS and
	// runtime stores hold it until it restarts. stagedSHA names the bundle
	// its staged files hold, which rotations refresh.
	injectedSHA, stagedSHA string
	entry                  string // its image entry (imageEntry), "" if unknown
}

// plugin implements the NRI handlers.
type plugin struct {
	cfg     *config
	log     *slog.Logger
	metrics *metrics
	bundles *bundleSet
	policy  injectionPolicy
	stager  *stager
	events  *eventRecorder // nil without an API server

	// mu guards the fields below. It is held for bookkeeping only, never
	// across file access or anything an image decides the size of.
	mu        sync.Mutex
	stub      stub.Stub   // of the current connection
	runtime   runtimeInfo // the runtime registered with, once known
	active    map[string]*injectedContainer
	synced    bool // the live container list is known (a Synchronize happened)
	connected bool
	lastErr   error
	pending   map[string]work // the worker's to-do list, by container ID
	// wrapperless holds the image entries whose containers need no
	// wrapper, as far as the worker learned (learnWrapper).
	wrapperless map[string]bool
	sweepLive   map[string]liveContainer // the live containers of a Synchronize, for the worker to sweep with
	wake        chan struct{}            // tells the worker there is work (capacity 1)
}

func newPlugin(cfg *config, log *slog.Logger, st *stager) *plugin {
	p := &plugin{cfg: cfg, log: log, stager: st, active: map[string]*injectedContainer{},
		pending: map[string]work{}, wrapperless: map[string]bool{}, wake: make(chan struct{}, 1)}
	p.bundles = newBundleSet(cfg, log)
	p.metrics = newMetrics(p.activeCount, p.outdatedCount, p.bundles.snapshots)
	p.metrics.runtime = p.runtimeInfo
	p.policy = injectionPolicy{
		prefix:            cfg.annotationPrefix,
		optOut:            cfg.injectionPolicy == policyOptOut,
		excludeNamespaces: cfg.excludeNamespaces,
		excludeContainers: cfg.excludeContainers,
	}
	return p
}

func (p *plugin) activeCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.active)
}

// outdatedCount counts injected containers started with a CA bundle other
// than the current one: they need a restart to trust exactly the new set.
func (p *plugin) outdatedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outdatedLocked()
}

// outdatedLocked counts; the caller holds p.mu.
func (p *plugin) outdatedLocked() int {
	n := 0
	for _, c := range p.active {
		if c.injectedSHA != "" && c.injectedSHA != p.bundles.currentSHA(c.bundle) {
			n++
		}
	}
	return n
}

// ready implements readiness: registered with the runtime, and the default
// CA bundle loaded. Without the bundle, every opted-in container is left
// to the fail policy: a rollout must stop at this node, not go on to the
// next.
func (p *plugin) ready() (bool, string) {
	if ok, why := p.registered(); !ok {
		return false, why
	}
	return p.bundles.def.usable()
}

// registered says whether the plugin is registered with the runtime, and
// why not.
func (p *plugin) registered() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.connected {
		return true, ""
	}
	if p.lastErr != nil {
		return false, fmt.Sprintf("not registered with the runtime at %s: %v", p.cfg.socket, p.lastErr)
	}
	return false, "not registered with the runtime at " + p.cfg.socket + " yet"
}

// run keeps the plugin registered until ctx ends. The NRI stub returns when
// the runtime goes away and does not reconnect, so this loop does, with
// backoff; the process never exits for want of a runtime.
func (p *plugin) run(ctx context.Context) {
	backoff := reconnectMin
	for ctx.Err() == nil {
		began := time.Now()
		err := p.connectOnce(ctx)
		p.setDisconnected(err)
		if ctx.Err() != nil {
			return
		}
		p.metrics.errors.inc(stageNRI)
		if time.Since(began) > healthyConnection {
			backoff = reconnectMin
		}
		p.log.Warn("not connected to the runtime over NRI; retrying", "socket", p.cfg.socket, "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, reconnectMax)
	}
}

// connectOnce registers a fresh stub and serves it until the connection ends.
func (p *plugin) connectOnce(ctx context.Context) error {
	s, err := stub.New(p,
		stub.WithPluginName(p.cfg.name),
		stub.WithPluginIdx(p.cfg.idx),
		stub.WithSocketPath(p.cfg.socket),
		stub.WithLogger(nriLogger{p.log.With("component", "nri")}),
	)
	if err != nil {
		return fmt.Errorf("create NRI stub: %w", err)
	}
	p.mu.Lock()
	p.stub = s
	p.mu.Unlock()
	err = s.Run(ctx)
	if err == nil {
		err = fmt.Errorf("connection closed")
	}
	return err
}

func (p *plugin) setDisconnected(err error) {
	p.metrics.nriConnected.Store(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connected, p.lastErr = false, err
}

// Configure is the runtime's first call after registration.
func (p *plugin) Configure(_ context.Context, _, runtime, version string) (api.EventMask, error) {
	p.mu.Lock()
	p.runtime = runtimeInfo{name: runtime, version: version, nriVersion: p.stub.RuntimeNRIVersion()}
	info := p.runtime
	p.mu.Unlock()
	p.log.Info("registered with the runtime", "runtime", info.name, "version", info.version, "nri_version", info.nriVersion,
		"plugin", p.cfg.idx+"-"+p.cfg.name)
	return 0, nil // the events of the handlers implemented below
}

// runtimeInfo is what the plugin knows of the runtime it registered with.
type runtimeInfo struct {
	name, version, nriVersion string
	// imageDigests says whether the runtime names each container's image by
	// its config digest over NRI (containerd 2.x does; containerd 1.7 and
	// CRI-O do not): yes, no, or "" while no container told.
	imageDigests string
}

func (r runtimeInfo) String() string {
	s := fmt.Sprintf("%s %s (NRI %s)", r.name, r.version, cmp.Or(r.nriVersion, "version unknown"))
	switch r.imageDigests {
	case "yes":
		s += "; names images by their config digest"
	case "no":
		s += "; names no image config digest: every injected container starts through the wrapper"
	}
	return s
}

// digestsOf says whether the containers name their image's config digest.
func digestsOf(containers []*api.Container) string {
	switch {
	case len(containers) == 0:
		return ""
	case slices.ContainsFunc(containers, func(c *api.Container) bool { return imageID(c) != "" }):
		return "yes"
	}
	return "no"
}

// noteImageDigests records whether the runtime names image digests, and
// says so once if it does not; the caller holds p.mu.
func (p *plugin) noteImageDigests(seen string) {
	if seen == "" || seen == p.runtime.imageDigests {
		return
	}
	p.runtime.imageDigests = seen
	if seen == "no" {
		p.log.Warn("the runtime names no image config digest over NRI: every injected container starts through the wrapper",
			"runtime", p.runtime.name, "version", p.runtime.version)
	}
}

// runtimeInfo is what the plugin knows of its runtime, for /metrics.
func (p *plugin) runtimeInfo() runtimeInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runtime
}

// liveContainer is what the runtime says of a container that exists.
type liveContainer struct {
	pod  podRef
	name string
}

// Synchronize hands over the pods and containers that exist. Staging
// directories of containers that are gone are orphans of a crash or of
// removals missed while disconnected; the worker sweeps them.
func (p *plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, containers []*api.Container) ([]*api.ContainerUpdate, error) {
	sandboxes := make(map[string]podRef, len(pods))
	for _, pod := range pods {
		sandboxes[pod.GetId()] = refOf(pod)
	}
	live := make(map[string]liveContainer, len(containers))
	for _, c := range containers {
		live[c.GetId()] = liveContainer{pod: sandboxes[c.GetPodSandboxId()], name: c.GetName()}
	}
	p.mu.Lock()
	for id := range p.active {
		if _, ok := live[id]; !ok {
			delete(p.active, id) // its directory goes in the sweep
		}
	}
	p.synced, p.sweepLive = true, live
	p.connected, p.lastErr = true, nil
	p.noteImageDigests(digestsOf(containers))
	injected := len(p.active)
	p.mu.Unlock()
	p.signal()

	p.metrics.nriRegistrations.Add(1)
	p.metrics.nriConnected.Store(true)
	p.log.Info("synchronized with the runtime", "containers", len(containers), "injected", injected)
	return nil, nil
}

// note leaves work for the worker; the caller holds p.mu.
func (p *plugin) note(id string, w work) {
	p.pending[id] |= w
}

// signal wakes the worker; it never blocks.
func (p *plugin) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// worker does the plugin's background work until ctx ends: what the NRI
// callbacks noted, the CA bundles' refresh and the staging sweep.
func (p *plugin) worker(ctx context.Context) {
	poll := time.NewTicker(bundlePollInterval)
	defer poll.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
			p.drain()
		case <-poll.C:
			p.refreshStaged() // loads a changed bundle first
		case <-sweep.C:
			p.sweep(nil)
		}
	}
}

// drain does the work noted so far.
func (p *plugin) drain() {
	p.mu.Lock()
	pending, live := p.pending, p.sweepLive
	p.pending, p.sweepLive = map[string]work{}, nil
	p.mu.Unlock()
	if live != nil {
		p.sweep(live)
	}
	for id, w := range pending {
		p.do(id, w)
	}
}

// do the work noted for one container.
func (p *plugin) do(id string, w work) {
	c, ok := p.container(id)
	if !ok {
		return
	}
	if w&(workCollect|workRemove) != 0 && !c.hookReported {
		p.learnWrapper(c.entry, p.collectHookStatus(id, &c))
		c.hookReported = true
		p.update(id, func(have *injectedContainer) {
			have.hookReported = true
			have.learn(c)
		})
	}
	switch {
	case w&workRemove != 0:
		p.removeStaging(id, cleanupRemoved)
	case w&workRefresh != 0:
		if p.refreshOne(id, c) {
			p.log.Info("refreshed the staged trust files of a container for a new CA bundle", "namespace", c.namespace,
				"pod", c.pod, "container", c.container, "container_id", id)
		}
	}
}

// container returns a copy of what the plugin knows of a container.
func (p *plugin) container(id string) (injectedContainer, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.active[id]
	if !ok {
		return injectedContainer{}, false
	}
	return *c, true
}

// update changes what the plugin knows of a container, if it still knows it.
func (p *plugin) update(id string, f func(*injectedContainer)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.active[id]; ok {
		f(c)
	}
}

// sweep removes staging directories of containers that do not exist. With
// live nil, the containers the plugin knows to be alive are the live set.
// Staging directories of live containers the plugin did not know yet (from
// before a restart) are adopted.
func (p *plugin) sweep(live map[string]liveContainer) {
	p.mu.Lock()
	synced := p.synced
	p.mu.Unlock()
	if !synced {
		return // the live containers are not known yet
	}
	ids, err := p.stager.list()
	if err != nil {
		p.metrics.errors.inc(stageCleanup)
		p.log.Error("list staging directories", "dir", p.stager.path, "error", err)
		return
	}
	for _, id := range ids {
		p.mu.Lock()
		_, known := p.active[id]
		p.mu.Unlock()
		ctr, isLive := live[id]
		switch {
		case known:
		case isLive:
			c := p.adopt(id, ctr)
			p.mu.Lock()
			if _, known := p.active[id]; !known {
				p.active[id] = c
			}
			p.mu.Unlock()
		default:
			p.removeStaging(id, cleanupOrphan)
		}
	}
}

// adopt recovers what a previous plugin process knew of a live container
// from the status its hook left. Without one (the hook still running, or
// killed) the container's report is collected later like any other's.
// Its names are the runtime's: a status holds no pod UID, and is read
// after the logs and events about it are made.
func (p *plugin) adopt(id string, ctr liveContainer) *injectedContainer {
	c := &injectedContainer{namespace: ctr.pod.namespace, pod: ctr.pod.name, podUID: ctr.pod.uid, container: ctr.name}
	if st, err := p.stager.readStatus(id); err == nil && st != nil {
		c.hookReported = true
		c.learn(fromStatus(st))
	}
	return c
}

// ref names the container's pod for its events.
func (c *injectedContainer) ref() podRef {
	return podRef{namespace: c.namespace, name: c.pod, uid: c.podUID}
}

// fromStatus is what a hook's status says of its container.
func fromStatus(st *hookStatus) injectedContainer {
	return injectedContainer{namespace: st.Namespace, pod: st.Pod, container: st.Container, bundle: st.Bundle,
		injectedSHA: st.CABundle, stagedSHA: st.CABundle}
}

// learn takes what the hook reported of a container the plugin adopted
// without knowing it: what the plugin knew when it created it.
func (c *injectedContainer) learn(reported injectedContainer) {
	if c.injectedSHA == "" {
		c.namespace, c.pod, c.container, c.bundle = reported.namespace, reported.pod, reported.container, reported.bundle
		c.injectedSHA, c.stagedSHA = reported.injectedSHA, reported.stagedSHA
	}
}

// CreateContainer decides, stages and adjusts. It is on the critical path of
// every container start: an unannotated pod costs a look at its annotations
// and a counter, not even a logger.
func (p *plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	d := p.policy.decide(pod, ctr)
	if !d.inject && d.skipReason == skipNotEnabled && len(d.warnings) == 0 {
		p.metrics.skips.inc(d.skipReason)
		return nil, nil, nil
	}
	log := p.log.With("namespace", pod.GetNamespace(), "pod", pod.GetName(), "container", ctr.GetName(), "container_id", ctr.GetId())
	for _, w := range d.warnings {
		p.metrics.annotationWarnings.inc(w.kind)
		log.Warn(w.msg, "kind", w.kind)
	}
	p.events.annotationEvents(refOf(pod), d.warnings)
	if !d.inject {
		p.metrics.skips.inc(d.skipReason)
		if d.skipReason != skipNotEnabled {
			log.Info("not injecting", "reason", d.skipReason)
		}
		if d.skipReason == skipNoProcessors {
			p.events.record(refOf(pod), eventInjectionSkipped,
				"the pod's processors.include and processors.exclude annotations leave no processor: its containers are not injected")
		}
		return nil, nil, nil
	}

	set, err := p.bundles.get(d.bundle)
	if err != nil {
		return nil, nil, p.fail(log, pod, ctr, stageBundle, err)
	}
	a := adjusting{pod: pod, ctr: ctr, processors: d.processors, bundle: set.bundle}
	a.vars, a.kept = trustEnvFor(d.processors, ctr.GetEnv())
	entry := imageEntry(ctr, set, a.processors, a.vars)
	// Known before its directory exists, so that no sweep takes it for an orphan.
	p.mu.Lock()
	p.active[ctr.GetId()] = &injectedContainer{namespace: pod.GetNamespace(), pod: pod.GetName(), container: ctr.GetName(),
		podUID: pod.GetUid(), bundle: set.bundle, injectedSHA: set.sha, stagedSHA: set.sha, entry: entry}
	a.wrapper = entry == "" || !p.wrapperless[entry]
	p.noteImageDigests(digestsOf([]*api.Container{ctr}))
	p.mu.Unlock()
	dir, err := p.stager.stage(ctr.GetId(), set.ours.pem, set.noTrust)
	if err != nil {
		p.mu.Lock()
		delete(p.active, ctr.GetId())
		p.mu.Unlock()
		if rmErr := p.stager.remove(ctr.GetId()); rmErr != nil {
			log.Error("remove partial staging directory", "error", rmErr)
		}
		return nil, nil, p.fail(log, pod, ctr, stageStaging, err)
	}

	a.stagingDir = dir
	adj := p.adjustment(a)
	p.metrics.injections.Add(1)
	if !a.wrapper {
		p.metrics.wrapperless.Add(1)
	}
	log.Info("injecting", "processors", strings.Join(d.processors, ","), "bundle", set.bundle, "ca_bundle_sha256", set.sha,
		"env_kept_from_pod", a.kept, "wrapper", a.wrapper)
	return adj, nil, nil
}

// fail applies the fail policy to a failed injection: fail-closed fails the
// container's creation, fail-open lets it start without injection. The pod
// is told with an event.
func (p *plugin) fail(log *slog.Logger, pod *api.PodSandbox, ctr *api.Container, stage string, err error) error {
	p.metrics.errors.inc(stage)
	reason := eventInjectionFailed
	if errors.Is(err, errNoBundleNamed) {
		reason = eventUnknownBundle
	}
	p.events.record(refOf(pod), reason, fmt.Sprintf("CA injection of container %q failed, %s: %v",
		ctr.GetName(), failPolicyOutcome(p.cfg.failPolicy), err))
	if p.cfg.failPolicy == failClosed {
		log.Error("injection failed; failing the container (fail-closed)", "stage", stage, "error", err)
		return fmt.Errorf("cainjekt: CA injection failed (fail-closed): %w", err)
	}
	p.metrics.skips.inc(skipInjectionFailed)
	log.Warn("injection failed; the container starts without it (fail-open)", "stage", stage, "error", err)
	return nil
}

// adjusting is what an opted-in container's adjustment is made of.
type adjusting struct {
	pod        *api.PodSandbox
	ctr        *api.Container
	stagingDir string
	processors []string
	bundle     string
	vars       []trustVar // the trust variables to set
	kept       []string   // those the container sets itself
	// wrapper is whether the container's command goes through the
	// wrapper: unless the plugin learned that its image, with this CA set
	// and these variables, needs none (imageEntry).
	wrapper bool
}

// adjustment is what the plugin changes in an opted-in container.
func (p *plugin) adjustment(a adjusting) *api.ContainerAdjustment {
	adj := &api.ContainerAdjustment{}
	adj.AddMount(&api.Mount{
		Destination: containerDir, Source: a.stagingDir, Type: "bind",
		Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"},
	})
	adj.AddHooks(&api.Hooks{CreateRuntime: []*api.Hook{{
		Path: p.cfg.hostBinary,
		Args: hookArgs(hookOptions{
			dynamicCARoot: p.cfg.dynamicCARoot,
			failPolicy:    p.cfg.failPolicy,
			processors:    a.processors,
			bundle:        a.bundle,
			namespace:     a.pod.GetNamespace(),
			pod:           a.pod.GetName(),
			container:     a.ctr.GetName(),
			timeout:       p.cfg.hookTimeout,
			logLevel:      p.cfg.logLevel,
		}),
		Env:     hookEnv,
		Timeout: &api.OptionalInt{Value: int64(p.cfg.hookTimeout / time.Second)},
	}}})
	if args := a.ctr.GetArgs(); len(args) > 0 && a.wrapper {
		adj.AddMount(&api.Mount{
			Destination: containerWrapper, Source: p.cfg.hostBinary, Type: "bind",
			Options: []string{"bind", "ro", "nosuid", "nodev"},
		})
		adj.SetArgs(append([]string{containerWrapper, "wrap", "--"}, args...))
	}
	for _, v := range a.vars {
		adj.AddEnv(v.name, v.value)
	}
	return adj
}

// imageEntry names what the plugin learns of the injections of a
// container's image, with the CA set, processors and trust variables it
// gets, "" where the runtime does not name the image: the image's config
// digest, which names its content, and everything else the hook reads but
// the pod's volumes (a hook that read one says so, and is not learnt
// from). The worker learns from each hook's report whether its container
// needed the wrapper (the JVM fallback store, or a failure to report in the
// container's log); the next containers of the entry go without it when
// none did.
func imageEntry(ctr *api.Container, set *trustSet, processors []string, vars []trustVar) string {
	id := imageID(ctr)
	if id == "" {
		return ""
	}
	env := slices.Clone(ctr.GetEnv())
	for _, v := range vars {
		env = append(env, v.name+"="+v.value)
	}
	h := sha256.New()
	field := func(v string) { fmt.Fprintf(h, "%d:%s\n", len(v), v) }
	for _, f := range append([]string{version, id, set.sha, string(set.noTrust), strings.Join(processors, ",")}, injectionEnv(env)...) {
		field(f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// maxLearned bounds what the plugin remembers of image entries.
const maxLearned = 4096

// learnWrapper remembers whether a container of an image entry needed the
// wrapper; one that did makes every later container of the entry get it.
func (p *plugin) learnWrapper(entry string, st *hookStatus) {
	if entry == "" || st != nil && st.Mounted {
		return // an injection of the pod's own volumes says nothing of the image's
	}
	needed := st == nil || st.Result != hookResultOK || len(st.Wrapper.Env)+len(st.Wrapper.Append) > 0
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.wrapperless) >= maxLearned {
		clear(p.wrapperless)
	}
	if _, known := p.wrapperless[entry]; !known || needed {
		p.wrapperless[entry] = !needed
	}
}

// imageID is the container's image as its config digest, which the
// runtime gives (containerd 2.x) and which names the image's content; ""
// where the runtime gives none.
func imageID(ctr *api.Container) string {
	id := ctr.GetImage().GetConfigDigest()
	if hexPart, ok := strings.CutPrefix(id, "sha256:"); ok && len(hexPart) == 64 && isHex(hexPart) {
		return id
	}
	return ""
}

// trustEnvFor returns the variables to set for the enabled processors, and
// the names of those it leaves alone because the container sets them
// already: a value the pod or image chose itself always wins.
func trustEnvFor(processors, containerEnv []string) (set []trustVar, kept []string) {
	for _, v := range trustVars(func(p string) bool { return slices.Contains(processors, p) }) {
		if envHas(containerEnv, v.name) {
			kept = append(kept, v.name)
			continue
		}
		set = append(set, v)
	}
	return set, kept
}

// PostStartContainer runs once the container started, its hook long done:
// the worker reads and counts the hook's report, and brings the staged files
// up to date if the CAs rotated since the container was created.
func (p *plugin) PostStartContainer(_ context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	p.noteIfActive(ctr.GetId(), workCollect|workRefresh)
	return nil
}

// RemoveContainer has the worker remove the container's staging directory,
// counting the hook's outcome first if the container never started (a hook
// that failed the container under fail-closed).
func (p *plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, ctr *api.Container) error {
	p.noteIfActive(ctr.GetId(), workCollect|workRemove)
	return nil
}

func (p *plugin) noteIfActive(id string, w work) {
	p.mu.Lock()
	_, ok := p.active[id]
	if ok {
		p.note(id, w)
	}
	p.mu.Unlock()
	if ok {
		p.signal()
	}
}

// refreshStaged loads the bundles that changed, then rewrites the staged
// trust files of every started container whose files hold another version
// of its bundle than the current one. It runs in the worker.
func (p *plugin) refreshStaged() {
	p.bundles.refresh()
	p.mu.Lock()
	ids := make([]string, 0, len(p.active))
	for id := range p.active {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	refreshed := 0
	for _, id := range ids {
		if c, ok := p.container(id); ok && p.refreshOne(id, c) {
			refreshed++
		}
	}
	if refreshed > 0 {
		p.log.Info("refreshed the staged trust files of running containers for a new CA bundle",
			"containers", refreshed, "outdated_os_stores", p.outdatedCount())
	}
}

// refreshOne rewrites a started container's staged trust files if they
// hold another version of its bundle than the current one, within
// refreshTimeout, and says whether it did.
func (p *plugin) refreshOne(id string, c injectedContainer) bool {
	if !c.hookReported || c.injectedSHA == "" {
		// Not started (its hook is still to write bundle.pem), or adopted
		// without a status: what its files hold is unknown.
		return false
	}
	set, err := p.bundles.get(c.bundle)
	if err != nil || c.stagedSHA == set.sha {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
	defer cancel()
	if err := p.stager.refresh(ctx, id, set); err != nil {
		p.metrics.errors.inc(stageStaging)
		p.log.Error("refresh staged trust files", "namespace", c.namespace, "pod", c.pod, "container", c.container, "container_id", id, "error", err)
		return false
	}
	p.update(id, func(have *injectedContainer) { have.stagedSHA = set.sha })
	return true
}

// collectHookStatus reads, counts and logs what the hook reported, notes
// it in c, and returns it (nil if there is none).
func (p *plugin) collectHookStatus(id string, c *injectedContainer) *hookStatus {
	log := p.log.With("namespace", c.namespace, "pod", c.pod, "container", c.container, "container_id", id)
	st, err := p.stager.readStatus(id)
	switch {
	case err != nil:
		p.metrics.hookRuns.inc(hookResultMissing)
		p.metrics.errors.inc(stageHook)
		log.Error("hook status unreadable", "error", err)
		p.events.record(c.ref(), eventInjectionFailed, fmt.Sprintf("the CA injection hook of container %q left no readable report", c.container))
		return nil
	case st == nil:
		p.metrics.hookRuns.inc(hookResultMissing)
		p.metrics.errors.inc(stageHook)
		log.Error("the hook left no status: it did not run or was killed")
		p.events.record(c.ref(), eventInjectionFailed, fmt.Sprintf("the CA injection hook of container %q left no report: it did not run, or was killed", c.container))
		return nil
	case st.Result == hookResultOK:
		p.metrics.hookRuns.inc(hookResultOK)
		log.Info("hook injected", "family", st.Family, "os_id", st.OSRelease.ID, "files", len(st.Files)+st.FilesOmitted, "duration_ms", st.DurationMS)
	default:
		if st.Result != hookResultTimeout {
			st.Result = hookResultFailed
		}
		p.metrics.hookRuns.inc(st.Result)
		p.metrics.errors.inc(stageHook)
		log.Warn("hook failed", "result", st.Result, "family", st.Family, "errors", st.Errors, "errors_omitted", st.ErrorsOmitted, "fail_policy", p.cfg.failPolicy)
		p.events.record(c.ref(), eventInjectionFailed, fmt.Sprintf("CA injection of container %q failed (%s), %s: %s",
			c.container, st.Result, failPolicyOutcome(p.cfg.failPolicy), firstError(st)))
	}
	if st.Mounted {
		p.events.record(c.ref(), eventTrustFileShadowed, fmt.Sprintf("container %q: the pod's volumes are over trust files, which CA injection leaves as they are: %s. "+
			"Programs that read them trust what the pod put there only; those that read SSL_CERT_FILE and the other trust variables trust that and the injected CAs",
			c.container, mountedTrustFiles(st)))
	}
	p.metrics.hookDuration.observe(st.DurationMS / 1000)
	c.learn(fromStatus(st))
	return st
}

// removeStaging deletes a staging directory and forgets the container.
func (p *plugin) removeStaging(id, reason string) {
	p.mu.Lock()
	delete(p.active, id)
	p.mu.Unlock()
	if err := p.stager.remove(id); err != nil {
		p.metrics.errors.inc(stageCleanup)
		p.log.Error("remove staging directory", "container_id", id, "error", err)
		return
	}
	p.metrics.cleanups.inc(reason)
}

// nriLogger sends the NRI stub's log lines to slog. Its Info lines are
// chatty about every (re)connection attempt: they go to debug.
type nriLogger struct{ log *slog.Logger }

func (l nriLogger) Debugf(_ context.Context, f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l nriLogger) Infof(_ context.Context, f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l nriLogger) Warnf(_ context.Context, f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l nriLogger) Errorf(_ context.Context, f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }

// hookArgs renders the options as the hook's argv. The fail policy comes
// first: a hook of another version that cannot read the rest still knows it.
func hookArgs(o hookOptions) []string {
	args := []string{
		"cainjekt", "hook",
		"--fail-policy", o.failPolicy,
		"--dynamic-ca-root", o.dynamicCARoot,
		"--processors", strings.Join(o.processors, ","),
		"--bundle", o.bundle,
		"--namespace", o.namespace,
		"--pod", o.pod,
		"--container", o.container,
		"--timeout", strconv.Itoa(int(o.timeout / time.Second)),
		"--log-level", strings.ToLower(o.logLevel.String()),
	}
	return args
}
