package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// nodeLayout is every path a node uses; all of them live under its Dir so that nodes
// never touch the host's /run/containerd, /var/lib/containerd or /var/run/nri, and
// removing Dir removes the node.
type nodeLayout struct {
	Config     string
	Root       string
	State      string
	Temp       string
	Address    string
	TTRPC      string
	ShimSocks  string
	NRISocket  string
	NRIPlugins string
	NRIConfigs string
	RuncRoot   string
	Runc       string
	CNIBin     string
	CNIConf    string
	CDI        string
	Opt        string
	Verifiers  string
	CertsD     string
	Pods       string
	PauseRef   string
	// CRI-O's: its storage, its files of state, conmon, pinns and the
	// image signature policy.
	RunRoot, Exits, Attach, Hooks, Namespaces, Policy, CrioConfD string
	Conmon, Pinns                                                string
}

func newLayout(dir string, bins Bins, pauseRef string) nodeLayout {
	p := func(name string) string { return filepath.Join(dir, name) }
	runc := bins.Runc
	return nodeLayout{
		RunRoot:    p("runroot"),
		Exits:      p("exits"),
		Attach:     p("attach"),
		Hooks:      p("hooks.d"),
		Namespaces: p("ns"),
		Policy:     p("policy.json"),
		CrioConfD:  p("crio.conf.d"),
		Conmon:     bins.Conmon,
		Pinns:      bins.Pinns,
		Config:     p("config.toml"),
		Root:       p("root"),
		State:      p("state"),
		Temp:       p("tmp"),
		Address:    p("containerd.sock"),
		TTRPC:      p("containerd.sock.ttrpc"),
		ShimSocks:  p("s"),
		NRISocket:  p("nri.sock"),
		NRIPlugins: p("nri/plugins"),
		NRIConfigs: p("nri/conf.d"),
		RuncRoot:   p("runc"),
		Runc:       runc,
		CNIBin:     p("cni/bin"),
		CNIConf:    p("cni/net.d"),
		CDI:        p("cdi"),
		Opt:        p("opt"),
		Verifiers:  p("image-verifiers"),
		CertsD:     p("certs.d"),
		Pods:       p("pods"),
		PauseRef:   pauseRef,
	}
}

// Key names are those of containerd v2.4.2 (cmd/containerd/server/config, internal/cri/config,
// internal/nri, core/runtime/v2/shim_manager.go, plugins/imageverifier,
// plugins/services/opt). Version 3 top-level grpc/ttrpc addresses are migrated by
// containerd itself to its server plugins.
var configTemplate = template.Must(template.New("config").Funcs(template.FuncMap{
	// Go's quoting equals TOML's basic strings for the printable paths used here.
	"q": strconv.Quote,
}).Parse(`version = 3
root = {{q .Root}}
state = {{q .State}}
temp = {{q .Temp}}

[grpc]
  address = {{q .Address}}

[ttrpc]
  address = {{q .TTRPC}}

[plugins."io.containerd.internal.v1.opt"]
  path = {{q .Opt}}

[plugins."io.containerd.image-verifier.v1.bindir"]
  bin_dir = {{q .Verifiers}}

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = {{q .ShimSocks}}

[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = {{q .NRISocket}}
  plugin_path = {{q .NRIPlugins}}
  plugin_config_path = {{q .NRIConfigs}}

# Only checks pods annotated required-plugins.noderesource.dev: such a pod is
# refused where the plugins it names are not registered.
[plugins."io.containerd.nri.v1.nri".default_validator]
  enable = true

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = {{q .PauseRef}}

[plugins."io.containerd.cri.v1.images".registry]
  config_path = {{q .CertsD}}

[plugins."io.containerd.cri.v1.runtime"]
  # Required here: the VM lacks CAP_SYS_RESOURCE, and without this every RunPodSandbox
  # fails in runc init writing the pause container's oom_score_adj of -998.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = [{{q .CDI}}]

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [{{q .CNIBin}}]
  conf_dir = {{q .CNIConf}}

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = {{q .Runc}}
  Root = {{q .RuncRoot}}
  SystemdCgroup = false
`))

// configV2Template is containerd 1.7's: config version 2, the CRI plugin's
// settings in its one section (v1.7.29's pkg/cri/config), NRI enabled as
// its documentation says (docs/NRI.md). 1.7 has no NRI validator.
var configV2Template = template.Must(template.New("config").Funcs(template.FuncMap{"q": strconv.Quote}).Parse(`version = 2
root = {{q .Root}}
state = {{q .State}}
temp = {{q .Temp}}

[grpc]
  address = {{q .Address}}

[ttrpc]
  address = {{q .TTRPC}}

[plugins."io.containerd.internal.v1.opt"]
  path = {{q .Opt}}

[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = {{q .NRISocket}}
  plugin_path = {{q .NRIPlugins}}
  plugin_config_path = {{q .NRIConfigs}}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {{q .PauseRef}}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = [{{q .CDI}}]

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = {{q .Runc}}
  Root = {{q .RuncRoot}}
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = {{q .CNIBin}}
  conf_dir = {{q .CNIConf}}

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = {{q .CertsD}}
`))

// crioTemplate is CRI-O's configuration (v1.34.0's pkg/config/template.go
// names the keys), every path below the node's directory. NRI is enabled
// as docs/operations.md tells operators to, in crio.conf.d (crioNRITemplate).
var crioTemplate = template.Must(template.New("crio").Funcs(template.FuncMap{"q": strconv.Quote}).Parse(`[crio]
root = {{q .Root}}
runroot = {{q .RunRoot}}
storage_driver = "overlay"
log_dir = {{q .Pods}}
version_file = {{q (print .State "/version")}}
version_file_persist = {{q (print .Root "/version")}}
clean_shutdown_file = {{q (print .Root "/clean.shutdown")}}

[crio.api]
listen = {{q .Address}}
stream_address = "127.0.0.1"
stream_port = "0"

[crio.runtime]
default_runtime = "runc"
cgroup_manager = "cgroupfs"
conmon = {{q .Conmon}}
conmon_cgroup = "pod"
container_exits_dir = {{q .Exits}}
container_attach_socket_dir = {{q .Attach}}
hooks_dir = [{{q .Hooks}}]
namespaces_dir = {{q .Namespaces}}
pinns_path = {{q .Pinns}}
cdi_spec_dirs = [{{q .CDI}}]

[crio.runtime.runtimes.runc]
runtime_path = {{q .Runc}}
runtime_root = {{q .RuncRoot}}
runtime_type = "oci"
monitor_path = {{q .Conmon}}

[crio.image]
pause_image = {{q .PauseRef}}
pause_command = "/pause"
signature_policy = {{q .Policy}}

[crio.network]
network_dir = {{q .CNIConf}}
plugin_dirs = [{{q .CNIBin}}]
`))

// crioNRITemplate is the drop-in that enables NRI in CRI-O, as
// docs/operations.md shows it.
var crioNRITemplate = template.Must(template.New("nri").Funcs(template.FuncMap{"q": strconv.Quote}).Parse(`[crio.nri]
enable_nri = true
nri_listen = {{q .NRISocket}}
nri_plugin_dir = {{q .NRIPlugins}}
nri_plugin_config_dir = {{q .NRIConfigs}}
`))

// podNetwork gives the pods that do not use the host's network (those
// with a user namespace) a network of their own: a bridge of the node's,
// with no address on the host and no route off it, which the runtime makes
// with the CNI plugins when the first such pod starts. Its config comes
// after any other in the node's CNI directory (make cluster-e2e adds the
// bridge it networks pods on).
func (l nodeLayout) podNetwork(ctx context.Context) error {
	dir, err := EnsureCNIPlugins(ctx, nil)
	if err != nil {
		return err
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		data, err := os.ReadFile(filepath.Join(dir, plugin))
		if err == nil {
			err = os.WriteFile(filepath.Join(l.CNIBin, plugin), data, 0o755)
		}
		if err != nil {
			return fmt.Errorf("install CNI plugin %s: %w", plugin, err)
		}
	}
	node := filepath.Base(filepath.Dir(l.Config))
	conf, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "pods", "plugins": []any{map[string]any{
		"type": "bridge", "bridge": podBridge(node), "isGateway": false, "ipMasq": false,
		"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(filepath.Dir(l.Config), "ipam"),
			"ranges": [][]map[string]string{{{"subnet": fmt.Sprintf("10.201.%d.0/24", node[0])}}}},
	}}})
	if err == nil {
		err = os.WriteFile(filepath.Join(l.CNIConf, "99-pods.conflist"), conf, 0o644)
	}
	if err != nil {
		return fmt.Errorf("the pods' network: %w", err)
	}
	return nil
}

// podBridge names the bridge of the node whose directory is node.
func podBridge(node string) string { return "cjn" + node }

// insecurePolicy is the image signature policy of the test bed's CRI-O:
// its images are built here and never pulled.
const insecurePolicy = `{"default": [{"type": "insecureAcceptAnything"}]}`

// writeConfig creates the node's directories and its runtime's config.
func (l nodeLayout) writeConfig(rt Runtime) error {
	for _, d := range []string{l.NRIPlugins, l.NRIConfigs, l.CNIBin, l.CNIConf, l.CDI, l.Pods, l.CrioConfD, l.Hooks} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create node dir: %w", err)
		}
	}
	files := map[string]*template.Template{l.Config: configTemplate}
	switch {
	case rt.CRIO:
		files = map[string]*template.Template{l.Config: crioTemplate, filepath.Join(l.CrioConfD, "10-nri.conf"): crioNRITemplate}
		if err := os.WriteFile(l.Policy, []byte(insecurePolicy), 0o644); err != nil {
			return err
		}
	case rt.ConfigV2:
		files = map[string]*template.Template{l.Config: configV2Template}
	}
	for path, tmpl := range files {
		var b strings.Builder
		if err := tmpl.Execute(&b, l); err != nil {
			return fmt.Errorf("render %s: %w", path, err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
