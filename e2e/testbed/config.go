package testbed

import (
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
}

func newLayout(dir, runc, pauseRef string) nodeLayout {
	p := func(name string) string { return filepath.Join(dir, name) }
	return nodeLayout{
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

// writeConfig creates the node's directories and its containerd config.
func (l nodeLayout) writeConfig() error {
	for _, d := range []string{l.NRIPlugins, l.NRIConfigs, l.CNIBin, l.CNIConf, l.CDI, l.Pods} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create node dir: %w", err)
		}
	}
	var b strings.Builder
	if err := configTemplate.Execute(&b, l); err != nil {
		return fmt.Errorf("render containerd config: %w", err)
	}
	if err := os.WriteFile(l.Config, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	return nil
}
