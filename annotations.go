package main

// Pod annotations: whether a container is injected, and with which processors.

import (
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
)

// Reasons a container is not injected, as the skips metric labels them.
const (
	skipNotEnabled        = "not_enabled"
	skipInvalidAnnotation = "invalid_annotation"
	skipContainerExcluded = "container_excluded"
	skipNoProcessors      = "no_processors"
	skipInjectionFailed   = "injection_failed" // fail-open: the errors metric says where
)

var skipReasons = []string{skipNotEnabled, skipInvalidAnnotation, skipContainerExcluded, skipNoProcessors, skipInjectionFailed}

// decision is what the annotations say about one container.
type decision struct {
	inject     bool
	skipReason string   // why not, when !inject
	processors []string // the enabled processors, in the order of allProcessors
	warnings   []string // odd annotations worth a log line
}

// decide reads the pod's annotations for container ctr. Only a pod that opts
// in with <prefix>/enabled: "true" is injected; anything else leaves the
// container exactly as the runtime made it.
func decide(prefix string, pod *api.PodSandbox, ctr *api.Container) decision {
	ann := pod.GetAnnotations()
	key := func(k string) string { return prefix + "/" + k }
	var d decision

	enabled, ok := ann[key(annEnabled)]
	switch v := strings.TrimSpace(enabled); {
	case !ok || strings.EqualFold(v, "false"):
		d.skipReason = skipNotEnabled
		return d
	case !strings.EqualFold(v, "true"):
		d.skipReason = skipInvalidAnnotation
		d.warnings = append(d.warnings, fmt.Sprintf("%s is %q, want \"true\" or \"false\": not injecting", key(annEnabled), enabled))
		return d
	}

	if slices.Contains(splitList(ann[key(annExcludeContainers)]), ctr.GetName()) {
		d.skipReason = skipContainerExcluded
		return d
	}

	include := splitList(strings.ToLower(ann[key(annProcessorsInclude)]))
	exclude := splitList(strings.ToLower(ann[key(annProcessorsExclude)]))
	for _, name := range append(append([]string(nil), include...), exclude...) {
		if !slices.Contains(allProcessors(), name) {
			d.warnings = append(d.warnings, fmt.Sprintf("unknown processor %q in %s annotations (known: %s)", name, prefix, strings.Join(allProcessors(), ", ")))
		}
	}
	for _, p := range allProcessors() {
		if (len(include) == 0 || slices.Contains(include, p)) && !slices.Contains(exclude, p) {
			d.processors = append(d.processors, p)
		}
	}
	if len(d.processors) == 0 {
		d.skipReason = skipNoProcessors
		return d
	}
	d.inject = true
	return d
}

// splitList splits a comma-separated annotation value, trimming blanks and
// dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// allProcessors lists every processor name: one per distribution family,
// then the language ones.
func allProcessors() []string {
	var names []string
	for _, f := range allFamilies() {
		names = append(names, f.processor())
	}
	return append(names, langProcessors()...)
}
