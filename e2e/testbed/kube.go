package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	// KubeVersion is the Kubernetes release of the cluster test bed: e2e/kube
	// requires k8s.io/kubernetes at this version.
	KubeVersion = "v1.34.4"
	cniModule   = "github.com/containernetworking/plugins"
	CNIVersion  = "v1.10.0"
)

// kubeCommands are the Kubernetes binaries built from e2e/kube, by package.
// etcd and kustomize are the versions k8s.io/kubernetes requires.
var kubeCommands = map[string]string{
	"etcd":                    "go.etcd.io/etcd/server/v3",
	"kube-apiserver":          "k8s.io/kubernetes/cmd/kube-apiserver",
	"kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
	"kube-scheduler":          "k8s.io/kubernetes/cmd/kube-scheduler",
	"kube-proxy":              "k8s.io/kubernetes/cmd/kube-proxy",
	"kubelet":                 "k8s.io/kubernetes/cmd/kubelet",
	"kubectl":                 "k8s.io/kubernetes/cmd/kubectl",
	"kustomize":               "sigs.k8s.io/kustomize/kustomize/v5",
}

// KubeBins locates the cluster's executables.
type KubeBins struct {
	Dir    string // etcd, kube-apiserver, ..., kubectl, kustomize
	CNI    string // bridge, host-local, loopback
	Runc   string // runc with seccomp: kubelet asks for the RuntimeDefault profile
	Shared Bins   // containerd, its shim and ctr
}

// Path returns the path of a Kubernetes binary by name.
func (k KubeBins) Path(name string) string { return filepath.Join(k.Dir, name) }

// EnsureKubeBinaries returns the cluster's binaries, building each set once
// from the Go module proxy: Kubernetes (the long one: 6 to 15 minutes cold on
// two cores), the CNI plugins, and runc built with seccomp.
func EnsureKubeBinaries(ctx context.Context, log func(string, ...any)) (KubeBins, error) {
	log = logger(log)
	shared, err := EnsureBinaries(ctx, log)
	if err != nil {
		return KubeBins{}, err
	}
	module, err := sourceDir("kube")
	if err != nil {
		return KubeBins{}, err
	}
	modHash, err := hashDir(module, "")
	if err != nil {
		return KubeBins{}, err
	}
	kubeDir, err := cached("kubernetes-"+KubeVersion+"-"+modHash[:12], func(tmp string) error {
		log("building Kubernetes %s from the Go module proxy (6 to 15 minutes on a cold cache)", KubeVersion)
		return buildKube(ctx, module, tmp)
	})
	if err != nil {
		return KubeBins{}, err
	}
	cniDir, err := EnsureCNIPlugins(ctx, log)
	if err != nil {
		return KubeBins{}, err
	}
	runcDir, err := cached("runc-"+RuncVersion+"-seccomp", func(tmp string) error {
		log("building runc %s with seccomp", RuncVersion)
		return goInstall(ctx, tmp, true, "-tags=seccomp", runcModule+"@"+RuncVersion)
	})
	if err != nil {
		return KubeBins{}, err
	}
	k := KubeBins{Dir: kubeDir, CNI: cniDir, Runc: filepath.Join(runcDir, "runc"), Shared: shared}
	for name := range kubeCommands {
		if _, err := os.Stat(k.Path(name)); err != nil {
			return KubeBins{}, fmt.Errorf("cached binary missing (delete its cache entry to rebuild): %w", err)
		}
	}
	return k, nil
}

// EnsureCNIPlugins returns the directory of the CNI plugins bridge,
// loopback and host-local, building them once.
func EnsureCNIPlugins(ctx context.Context, log func(string, ...any)) (string, error) {
	return cached("cni-plugins-"+CNIVersion, func(tmp string) error {
		logger(log)("building the CNI plugins %s", CNIVersion)
		return goInstall(ctx, tmp, false,
			cniModule+"/plugins/main/bridge@"+CNIVersion,
			cniModule+"/plugins/main/loopback@"+CNIVersion,
			cniModule+"/plugins/ipam/host-local@"+CNIVersion)
	})
}

// buildKube builds every kubeCommands binary into dir in one go build, so
// the packages they share are compiled once. The version fields are what
// Kubernetes' own build sets: without them the servers call themselves
// v0.0.0, which kubectl cannot parse.
func buildKube(ctx context.Context, module, dir string) error {
	var ldflags []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		major, minor, _ := strings.Cut(strings.TrimPrefix(KubeVersion, "v"), ".")
		minor, _, _ = strings.Cut(minor, ".")
		ldflags = append(ldflags, "-X", pkg+".gitVersion="+KubeVersion, "-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor, "-X", pkg+".gitTreeState=clean", "-X", pkg+".buildDate=1970-01-01T00:00:00Z")
	}
	args := []string{"-n", "10", "go", "build", "-trimpath", "-ldflags", "-s -w " + strings.Join(ldflags, " "), "-o", dir + "/"}
	for _, pkg := range kubeCommands {
		args = append(args, pkg)
	}
	// nice: the build takes both cores for a long time; whatever else runs
	// on the machine meanwhile stays responsive.
	cmd := command(ctx, "nice", args...)
	cmd.Dir = module
	cmd.Env = withEnv("CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if err := run(cmd); err != nil {
		return err
	}
	// go build names a module's root package after the path element
	// before its major version.
	for from, to := range map[string]string{"server": "etcd"} {
		if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
			return fmt.Errorf("name %s: %w", to, err)
		}
	}
	return nil
}
