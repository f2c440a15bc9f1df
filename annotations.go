//go:build !hookonly

package main

// Pod annotations: whether a container is injected, and with which processors.

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/nri/pkg/api"
)

// Annotation keys, after the configurable prefix and a '/'.
const (
	annEnabled           = "enabled"
	annProcessorsInclude = "processors.include"
	annProcessorsExclude = "processors.exclude"
	annExcludeContainers = "exclude-containers"
	annBundle            = "bundle"
)

// Reasons a container is not injected, as the skips metric labels them.
const (
	skipNotEnabled        = "not_enabled"
	skipInvalidAnnotation = "invalid_annotation"
	skipContainerExcluded = "container_excluded"
	skipNoProcessors      = "no_processors"
	skipInjectionFailed   = "injection_failed" // fail-open: the errors metric says where
	skipNamespaceExcluded = "namespace_excluded"
)

var skipReasons = []string{skipNotEnabled, skipInvalidAnnotation, skipContainerExcluded, skipNoProcessors, skipInjectionFailed, skipNamespaceExcluded}

// Kinds of annotation warnings, as cainjekt_annotation_warnings_total labels them.
const (
	warnTypo             = "typo"
	warnUnknownProcessor = "unknown_processor"
	warnTooLong          = "too_long"
	warnInvalidValue     = "invalid_value"
	warnNamespaceLookup  = "namespace_lookup"
)

var annotationWarningKinds = []string{warnTypo, warnUnknownProcessor, warnTooLong, warnInvalidValue, warnNamespaceLookup}

// maxAnnotationValue bounds the values cainjekt reads; its own are short,
// and Kubernetes allows 256 KiB for all of a pod's annotations together.
const maxAnnotationValue = 4096

// annotationWarning is an odd annotation worth a log line and a metric.
type annotationWarning struct{ kind, msg string }

// decision is what the annotations say about one container.
type decision struct {
	inject     bool
	skipReason string   // why not, when !inject
	processors []string // the enabled processors, in the order of allProcessors
	bundle     string   // the named CA bundle the pod or namespace picked, "" for the default
	warnings   []annotationWarning
}

func (d *decision) warn(kind, format string, args ...any) {
	d.warnings = append(d.warnings, annotationWarning{kind, fmt.Sprintf(format, args...)})
}

// injectionPolicy decides which containers are injected: from the pod's
// annotations, its labels, its namespace's labels, and the cluster-wide
// mode.
type injectionPolicy struct {
	prefix            string
	optOut            bool     // inject every pod that does not say no
	excludeNamespaces []string // never injected in opt-out mode
	excludeContainers []string // container names never injected
	// namespace looks a namespace up; nil when lookups are off.
	namespace func(name string) (*namespaceInfo, error)
}

// decide says whether container ctr of pod is injected, with which
// processors and which bundle. Values are only compared and split, never
// used as paths.
func (pol injectionPolicy) decide(pod *api.PodSandbox, ctr *api.Container) decision {
	var d decision
	checkKeys(&d, pol.prefix, pod.GetAnnotations())
	v := &podView{pol: &pol, pod: pod, d: &d}
	if d.skipReason = v.optIn(); d.skipReason != "" {
		return d
	}
	excluded, _ := v.annotation(annExcludeContainers)
	if slices.Contains(splitList(excluded), ctr.GetName()) || slices.Contains(pol.excludeContainers, ctr.GetName()) {
		d.skipReason = skipContainerExcluded
		return d
	}
	d.bundle = v.bundle()
	if d.processors = v.processors(); len(d.processors) == 0 {
		d.skipReason = skipNoProcessors
		return d
	}
	d.inject = true
	return d
}

// podView reads one pod's cainjekt annotations and labels, and its
// namespace's, looking the namespace up once at most.
type podView struct {
	pol *injectionPolicy
	pod *api.PodSandbox
	d   *decision
	ns  *namespaceInfo
}

// annotation returns the pod's annotation <prefix>/name; a value too long
// is ignored, with a warning.
func (v *podView) annotation(name string) (string, bool) {
	value, ok := v.pod.GetAnnotations()[v.pol.prefix+"/"+name]
	if len(value) > maxAnnotationValue {
		v.d.warn(warnTooLong, "%s/%s is %d bytes long, more than %d: ignored", v.pol.prefix, name, len(value), maxAnnotationValue)
		return "", false
	}
	return value, ok
}

// namespaced returns the namespace's label <prefix>/name, else its
// annotation; a namespace that cannot be looked up has neither.
func (v *podView) namespaced(name string) (string, bool) {
	if v.pol.namespace == nil {
		return "", false
	}
	if v.ns == nil {
		var err error
		if v.ns, err = v.pol.namespace(v.pod.GetNamespace()); err != nil {
			v.d.warn(warnNamespaceLookup, "namespace %s could not be looked up: %v", v.pod.GetNamespace(), err)
			v.ns = &namespaceInfo{}
		}
	}
	return v.ns.metadata(v.pol.prefix + "/" + name)
}

// optIn is the opt-in cascade: the pod decides first (annotation, then
// label; its "false" always wins), then its namespace (label, or
// annotation), then the mode: opt-in injects nothing more, opt-out every
// pod outside the excluded namespaces. It returns why not, or "".
func (v *podView) optIn() string {
	enabled, set := v.annotation(annEnabled)
	if !set && len(v.pod.GetAnnotations()[v.pol.prefix+"/"+annEnabled]) > 0 {
		return skipInvalidAnnotation // too long
	}
	if !set {
		enabled, set = v.pod.GetLabels()[v.pol.prefix+"/"+annEnabled]
	}
	if !set {
		enabled, set = v.namespaced(annEnabled)
	}
	switch value := strings.TrimSpace(enabled); {
	case set && strings.EqualFold(value, "false"):
		return skipNotEnabled
	case set && !strings.EqualFold(value, "true"):
		v.d.warn(warnInvalidValue, "%s/%s is %q, want \"true\" or \"false\": not injecting", v.pol.prefix, annEnabled, printable(enabled, 64))
		return skipInvalidAnnotation
	case !set && !v.pol.optOut:
		return skipNotEnabled
	case !set && slices.Contains(v.pol.excludeNamespaces, v.pod.GetNamespace()):
		return skipNamespaceExcluded
	}
	return ""
}

// bundle is the named CA bundle the pod, else its namespace, picked.
func (v *podView) bundle() string {
	name, set := v.annotation(annBundle)
	if !set {
		name, _ = v.namespaced(annBundle)
	}
	return strings.TrimSpace(name)
}

// processors are the processors the pod's include and exclude lists leave,
// in the order of processorNames.
func (v *podView) processors() []string {
	includeValue, _ := v.annotation(annProcessorsInclude)
	excludeValue, _ := v.annotation(annProcessorsExclude)
	include, exclude := processorList(includeValue), processorList(excludeValue)
	for _, name := range append(slices.Clone(include), exclude...) {
		if !slices.Contains(processorNames, name) {
			v.d.warn(warnUnknownProcessor, "unknown processor %q in %s annotations (known: %s)", printable(name, 64), v.pol.prefix, strings.Join(processorNames, ", "))
		}
	}
	var enabled []string
	for _, p := range processorNames {
		if (len(include) == 0 || slices.Contains(include, p)) && !slices.Contains(exclude, p) {
			enabled = append(enabled, p)
		}
	}
	return enabled
}

// processorAliases are natrontech/cainjekt's names of our processors.
var processorAliases = map[string]string{"os-opensuse": "os-suse"}

// processorList splits an include or exclude list, names folded to ours.
func processorList(value string) []string {
	names := splitList(strings.ToLower(value))
	for i, name := range names {
		names[i] = cmp.Or(processorAliases[name], name)
	}
	return names
}

// annotationNames are the names cainjekt reads after its prefix.
var annotationNames = []string{annEnabled, annProcessorsInclude, annProcessorsExclude, annExcludeContainers, annBundle}

// checkKeys warns of keys that look like a misspelt cainjekt annotation: an
// unknown name under our prefix, or a known name under a prefix a typo or
// two away from ours. A pod that misspells the opt-in would otherwise run
// uninjected without a word.
func checkKeys(d *decision, prefix string, ann map[string]string) {
	for key := range ann {
		p, name, ok := strings.Cut(key, "/")
		switch {
		case !ok:
		case p == prefix && !slices.Contains(annotationNames, name):
			d.warn(warnTypo, "unknown annotation %q%s", printable(key, 128), suggestion(prefix, name))
		case p != prefix && withinEdits(p, prefix, 2) && closestName(name) != "":
			d.warn(warnTypo, "annotation %q looks like a typo of %q: it is ignored", printable(key, 128), prefix+"/"+closestName(name))
		}
	}
}

func suggestion(prefix, name string) string {
	if c := closestName(name); c != "" {
		return fmt.Sprintf(": did you mean %q?", prefix+"/"+c)
	}
	return " (known: " + strings.Join(annotationNames, ", ") + ")"
}

// closestName returns the annotation name within two edits of name.
func closestName(name string) string {
	for _, n := range annotationNames {
		if withinEdits(strings.ToLower(name), n, 2) {
			return n
		}
	}
	return ""
}

// withinEdits reports whether a and b are at most max single-character
// insertions, deletions or substitutions apart.
func withinEdits(a, b string, max int) bool {
	if d := len(a) - len(b); d > max || -d > max {
		return false
	}
	return editDistance(a, b) <= max
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// processorNames lists every processor name.
var processorNames = allProcessors()

// allProcessors lists every processor name: one per distribution family,
// then the language ones.
func allProcessors() []string {
	var names []string
	for _, f := range allFamilies() {
		names = append(names, f.processor())
	}
	return append(names, langProcessors()...)
}

// allFamilies lists every family, the fallback last.
func allFamilies() []distroFamily {
	return append(families[:len(families):len(families)], fallbackFamily)
}

// langProcessors lists the runtimes' processors, sorted.
func langProcessors() []string {
	var names []string
	for _, rt := range runtimes {
		names = append(names, rt.processor)
	}
	slices.Sort(names)
	return names
}
