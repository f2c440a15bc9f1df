package testbed

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSpec describes a pod. Pods use the host network, so they need no CNI plugin
// and reach servers the test starts on 127.0.0.1; but for a pod with a user namespace.
type PodSpec struct {
	Name, Namespace     string // Namespace defaults to "default"
	Annotations, Labels map[string]string
	// UsernsHostID, unless 0, runs the pod in a user namespace of its own
	// (hostUsers: false), its IDs 0-65535 mapped to 65536 host IDs from
	// this one: a multiple of 65536, as kubelet allocates them. Such a pod
	// has a network namespace of its own, as Kubernetes requires of it,
	// with loopback only.
	UsernsHostID uint32
}

// ContainerSpec describes a container; Name must be unique within its pod.
type ContainerSpec struct {
	Name, Image    string
	Command, Args  []string
	Env            map[string]string
	ReadOnlyRootfs bool
	Mounts         []*runtimeapi.Mount // volumes, as kubelet gives them
}

// Pod is a running pod sandbox.
type Pod struct {
	ID string

	node   *Node
	config *runtimeapi.PodSandboxConfig
}

// namespaceOptions are kubelet's defaults for a hostNetwork pod, with a
// user namespace of the pod's own from usernsHostID, unless 0.
func namespaceOptions(usernsHostID uint32) *runtimeapi.NamespaceOption {
	opts := &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_NODE,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
	if usernsHostID != 0 {
		opts.Network = runtimeapi.NamespaceMode_POD
		ids := []*runtimeapi.IDMapping{{HostId: usernsHostID, ContainerId: 0, Length: 1 << 16}}
		opts.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: ids, Gids: ids}
	}
	return opts
}

// RunPod starts a pod sandbox the way kubelet does: fresh UID, log directory created
// beforehand, cgroup parent below the node's own so Close can remove it.
func (n *Node) RunPod(ctx context.Context, spec PodSpec) (*Pod, error) {
	if spec.Name == "" {
		return nil, errors.New("pod needs a name")
	}
	ns := cmp.Or(spec.Namespace, "default")
	uid := newUID()
	logDir := filepath.Join(n.layout.Pods, ns+"_"+spec.Name+"_"+uid)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("create pod log dir: %w", err)
	}
	labels := withLabels(spec.Labels, map[string]string{
		"io.kubernetes.pod.name":      spec.Name,
		"io.kubernetes.pod.namespace": ns,
		"io.kubernetes.pod.uid":       uid,
	})
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: spec.Name, Namespace: ns, Uid: uid},
		LogDirectory: logDir,
		Labels:       labels,
		Annotations:  spec.Annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    path.Join(n.cgroupParent, "pod"+uid),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: namespaceOptions(spec.UsernsHostID)},
		},
	}
	resp, err := n.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return nil, fmt.Errorf("run pod %s/%s: %w", ns, spec.Name, err)
	}
	return &Pod{ID: resp.GetPodSandboxId(), node: n, config: cfg}, nil
}

// Create creates a container in the pod as kubelet does, logging to
// <pod log dir>/<name>/0.log.
func (p *Pod) Create(ctx context.Context, c ContainerSpec) (string, error) {
	if c.Name == "" || c.Image == "" {
		return "", errors.New("container needs a name and an image")
	}
	if err := os.MkdirAll(filepath.Join(p.config.GetLogDirectory(), c.Name), 0o755); err != nil {
		return "", fmt.Errorf("create container log dir: %w", err)
	}
	logPath := filepath.Join(c.Name, "0.log")
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: c.Name},
		// As kubelet gives it: CRI-O refuses a container without the image
		// the user named, whose signature it would verify.
		Image:   &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: c.Image},
		Command: c.Command,
		Args:    c.Args,
		Envs:    envs(c.Env),
		Labels:  withLabels(p.config.GetLabels(), map[string]string{"io.kubernetes.container.name": c.Name}),
		LogPath: logPath,
		Mounts:  c.Mounts,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: p.config.GetLinux().GetSecurityContext().GetNamespaceOptions(),
				ReadonlyRootfs:   c.ReadOnlyRootfs,
			},
		},
	}
	resp, err := p.node.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId:  p.ID,
		Config:        cfg,
		SandboxConfig: p.config,
	})
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", c.Name, err)
	}
	id := resp.GetContainerId()
	p.node.logPaths.Store(id, filepath.Join(p.config.GetLogDirectory(), logPath))
	return id, nil
}

// Start starts a created container.
func (p *Pod) Start(ctx context.Context, id string) error {
	if _, err := p.node.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// Run creates and starts a container.
func (p *Pod) Run(ctx context.Context, c ContainerSpec) (string, error) {
	id, err := p.Create(ctx, c)
	if err != nil {
		return "", err
	}
	return id, p.Start(ctx, id)
}

// Remove stops and removes the pod with all its containers.
func (p *Pod) Remove(ctx context.Context) error {
	return p.node.removePod(ctx, p.ID)
}

// WaitExit polls the container's status until it has exited and returns its exit code.
func (n *Node) WaitExit(ctx context.Context, id string) (int32, error) {
	for {
		resp, err := n.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return 0, fmt.Errorf("status of container %s: %w", id, err)
		}
		if st := resp.GetStatus(); st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			return st.GetExitCode(), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for container %s: %w", id, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Logs returns what the container wrote to stdout and stderr, interleaved, without the
// CRI log format's per-line prefixes. It works after the pod is removed, as the log file
// stays until Close.
func (n *Node) Logs(id string) (string, error) {
	p, ok := n.logPaths.Load(id)
	if !ok {
		return "", fmt.Errorf("container %s was not created through this node", id)
	}
	data, err := os.ReadFile(p.(string))
	if err != nil {
		return "", fmt.Errorf("read logs of %s: %w", id, err)
	}
	return parseCRILog(string(data)), nil
}

// parseCRILog strips the "TIMESTAMP STREAM TAG " prefix of every CRI log line. Tag P marks
// a partial line continued by the next record; F ends the line.
func parseCRILog(data string) string {
	var b strings.Builder
	for line := range strings.Lines(data) {
		parts := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
		if len(parts) < 3 {
			continue
		}
		if len(parts) == 4 {
			b.WriteString(parts[3])
		}
		if tag, _, _ := strings.Cut(parts[2], ":"); tag != "P" {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Exec runs cmd in the container (CRI ExecSync) and returns its output and exit code;
// timeout is rounded up to whole seconds, the CRI's unit.
func (n *Node) Exec(ctx context.Context, id string, cmd []string, timeout time.Duration) (stdout, stderr string, exit int32, err error) {
	resp, err := n.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{
		ContainerId: id,
		Cmd:         cmd,
		Timeout:     int64((timeout + time.Second - 1) / time.Second),
	})
	if err != nil {
		return "", "", 0, fmt.Errorf("exec %q in %s: %w", cmd, id, err)
	}
	return string(resp.GetStdout()), string(resp.GetStderr()), resp.GetExitCode(), nil
}

// envs converts env to CRI key-values in a stable order.
func envs(env map[string]string) []*runtimeapi.KeyValue {
	var out []*runtimeapi.KeyValue
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(env[k])})
	}
	return out
}

// withLabels returns a copy of labels with kubelet's own labels added; like kubelet's,
// they win over user labels.
func withLabels(labels, kubelet map[string]string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, kubelet)
	return out
}

// newUID returns a random RFC 4122 version 4 UUID, like a pod's metadata.uid.
func newUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
