package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	// criNamespace is the containerd namespace the CRI plugin (and so NRI) works in.
	criNamespace = "k8s.io"
	// nodesDir holds the node directories. Its name is short on purpose: the longest
	// socket path, a shim's "<dir>/s/<64 hex>", must fit the 107 usable bytes of a
	// unix socket address.
	nodesDir = "/run/cje"
)

// NodeOptions configures StartNode.
type NodeOptions struct {
	Bins       Bins
	PauseImage *Image
	Log        io.Writer // containerd's stdout and stderr; nil discards them
	// NRISocket moves containerd's NRI socket out of the node directory, to
	// where a DaemonSet on a real node finds it.
	NRISocket string
}

// Node is a running container runtime, containerd or CRI-O, with CRI and
// NRI, whose every file lives under Dir.
type Node struct {
	Dir       string
	Kind      Runtime // which runtime it runs
	Address   string  // the runtime's gRPC socket, serving CRI
	NRISocket string  // where external NRI plugins connect
	// Runtime and Images stay valid across Restart: the connection redials by itself.
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient

	layout       nodeLayout
	bins         Bins
	log          io.Writer
	pauseImage   *Image
	cgroupParent string
	conn         *grpc.ClientConn
	logPaths     sync.Map // container ID -> CRI log file

	owner *os.File // the node directory, flocked while this process owns the node

	mu      sync.Mutex // serialises Restart and Close
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	exitErr error
	closed  bool
}

// ContainerRootfs is where a running container's root filesystem is mounted on the node:
// the files its processes see.
func (n *Node) ContainerRootfs(id string) string {
	return filepath.Join(n.layout.State, "io.containerd.runtime.v2.task", criNamespace, id, "rootfs")
}

// StartNode writes the node's containerd config, starts containerd, waits until CRI
// answers and imports the pause image. On failure everything created is torn down.
func StartNode(ctx context.Context, opts NodeOptions) (*Node, error) {
	if opts.PauseImage == nil || opts.Bins.Runc == "" || opts.Bins.Containerd == "" && opts.Bins.Crio == "" {
		return nil, errors.New("node options need Bins and a PauseImage")
	}
	reclaimStaleNodes()
	dir, owner, err := createNodeDir()
	if err != nil {
		return nil, err
	}
	n, err := newNode(dir, opts)
	if err != nil {
		return nil, errors.Join(err, removeTree(dir), owner.Close())
	}
	n.owner = owner
	if err := n.boot(ctx); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

// boot writes the config, starts the runtime and imports the pause image.
func (n *Node) boot(ctx context.Context) error {
	if err := n.layout.writeConfig(n.bins.Runtime); err != nil {
		return err
	}
	if err := n.layout.podNetwork(ctx); err != nil {
		return err
	}
	if err := n.start(ctx); err != nil {
		return err
	}
	return n.ImportImage(ctx, n.pauseImage)
}

// createNodeDir creates a node directory /run/cje/<random> and returns it
// open and flocked: the lock says a live process owns the node, and goes with
// that process however it ends. The directory is created under a dot name
// and renamed once locked, so that reclaimStaleNodes never takes a node being
// born for one whose owner died.
func createNodeDir() (string, *os.File, error) {
	dir := filepath.Join(nodesDir, randomHex(4))
	if err := os.MkdirAll(nodesDir, 0o755); err != nil {
		return "", nil, fmt.Errorf("create %s: %w", nodesDir, err)
	}
	if _, err := os.Lstat(dir); err == nil {
		return "", nil, fmt.Errorf("create node dir: %w", fs.ErrExist)
	}
	birth := filepath.Join(nodesDir, ".new-"+randomHex(8))
	if err := os.Mkdir(birth, 0o711); err != nil {
		return "", nil, fmt.Errorf("create node dir: %w", err)
	}
	owner, err := os.Open(birth) // O_CLOEXEC: containerd does not inherit the lock
	if err == nil {
		err = syscall.Flock(int(owner.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err == nil {
		err = os.Rename(birth, dir)
	}
	if err != nil {
		if owner != nil {
			owner.Close()
		}
		return "", nil, errors.Join(fmt.Errorf("create node dir: %w", err), os.Remove(birth))
	}
	return dir, owner, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}

// reclaimStaleNodes tears down the nodes under nodesDir whose owner died
// without Close (a test binary killed by its timeout, ^C on a command):
// their containerd, shims and containers, mounts, directories and cgroups.
// Nodes of live processes, in this process or another, hold their lock and
// are left alone. It is best effort: what it cannot remove stays for the next.
func reclaimStaleNodes() {
	entries, _ := os.ReadDir(nodesDir)
	for _, e := range entries {
		dir := filepath.Join(nodesDir, e.Name())
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			cg := cgroupParentOf(dir)
			killUntilGone(func() ([]int, error) { return nodeProcs(dir, cg) }, 10*time.Second)
			removeTree(dir)
			removeCgroups(cg)
			removeBridge(podBridge(e.Name()))
		}
		f.Close()
	}
}

// cgroupParentOf is the cgroup a node's pods run under.
func cgroupParentOf(dir string) string { return "/cainjekt-e2e-" + contentKey([]byte(dir))[:8] }

func newNode(dir string, opts NodeOptions) (*Node, error) {
	l := newLayout(dir, opts.Bins, opts.PauseImage.Ref)
	if opts.NRISocket != "" {
		l.NRISocket = opts.NRISocket
	}
	conn, err := grpc.NewClient("unix://"+l.Address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Redial fast after a containerd restart instead of backing off for seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("create CRI client: %w", err)
	}
	return &Node{
		Dir:          dir,
		Kind:         opts.Bins.Runtime,
		Address:      l.Address,
		NRISocket:    l.NRISocket,
		Runtime:      runtimeapi.NewRuntimeServiceClient(conn),
		Images:       runtimeapi.NewImageServiceClient(conn),
		layout:       l,
		bins:         opts.Bins,
		log:          opts.Log,
		pauseImage:   opts.PauseImage,
		cgroupParent: cgroupParentOf(dir),
		conn:         conn,
	}, nil
}

// start launches the runtime and waits until its CRI service answers.
func (n *Node) start(ctx context.Context) error {
	cmd := exec.Command(n.bins.Containerd, "--config", n.layout.Config)
	if n.bins.Runtime.CRIO {
		cmd = exec.Command(n.bins.Crio, "--config", n.layout.Config, "--config-dir", n.layout.CrioConfD)
	}
	// containerd looks its shim up on PATH; runc is configured by absolute path but is
	// put on PATH too for anything that looks it up by name.
	cmd.Env = withEnv("PATH=" + n.bins.Dir + ":" + filepath.Dir(n.bins.Runc) + ":" + standardPath)
	cmd.Stdout, cmd.Stderr = n.log, n.log
	// Its own process group keeps a ^C aimed at the test from killing containerd before
	// Close has removed the pods.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Shims inherit nothing of ours, but never let a stray holder of the log pipe block
	// Wait forever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		n.exitErr = cmd.Wait()
		close(exited)
	}()
	n.cmd, n.exited = cmd, exited
	return n.waitReady(ctx)
}

func (n *Node) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := n.Runtime.Version(callCtx, &runtimeapi.VersionRequest{})
		callCancel()
		if err == nil {
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("%s exited before serving CRI: %v", n.Kind.Name, n.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("%s CRI not ready: %w (last error: %v)", n.Kind.Name, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop terminates containerd gracefully (SIGKILL after 30 s). Shims and their containers
// keep running, as on a real node.
func (n *Node) stop() error {
	if n.cmd == nil {
		return nil
	}
	if err := terminate(n.cmd.Process, n.exited, 30*time.Second); err != nil {
		return fmt.Errorf("stop containerd: %w", err)
	}
	return nil
}

// Restart stops containerd and starts it again with the same config and state; running
// pods survive.
func (n *Node) Restart(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("restart: node is closed")
	}
	if err := n.stop(); err != nil {
		return err
	}
	return n.start(ctx)
}

// ImportImage imports img's archive into the runtime's image store (the
// CRI namespace of containerd, containers-storage of CRI-O) and waits until
// CRI sees it.
func (n *Node) ImportImage(ctx context.Context, img *Image) error {
	cmd := command(ctx, n.bins.Ctr, "--address", n.Address, "-n", criNamespace, "images", "import", img.Archive)
	if n.Kind.CRIO {
		store := fmt.Sprintf("containers-storage:[overlay@%s+%s]%s", n.layout.Root, n.layout.RunRoot, img.Ref)
		cmd = command(ctx, n.bins.Skopeo, "copy", "--quiet", "--insecure-policy", "oci-archive:"+img.Archive, store)
	}
	if err := run(cmd); err != nil {
		return fmt.Errorf("import %s: %w", img.Ref, err)
	}
	// CRI learns about images from the store, asynchronously.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		resp, err := n.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: img.Ref}})
		if err == nil && resp.GetImage() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("imported %s but CRI does not see it: %w (last error: %v)", img.Ref, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close tears the node down completely: pods, containerd, leftover shims and container
// processes, mounts, the pod cgroups (containerd leaves them to kubelet) and Dir. A
// second Close does nothing.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	if n.running() {
		errs = append(errs, n.removeAllPods())
	}
	errs = append(errs, n.stop(), n.conn.Close())
	errs = append(errs, killUntilGone(func() ([]int, error) { return nodeProcs(n.Dir, n.cgroupParent) }, 10*time.Second))
	errs = append(errs, removeTree(n.Dir), removeCgroups(n.cgroupParent), removeBridge(podBridge(filepath.Base(n.Dir))), n.owner.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close node %s: %w", n.Dir, err)
	}
	return nil
}

func (n *Node) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// removeAllPods stops and removes every pod sandbox through CRI, as kubelet would when
// draining, so that containerd and the shims clean up after themselves.
func (n *Node) removeAllPods() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := n.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var errs []error
	for _, sb := range resp.GetItems() {
		errs = append(errs, n.removePod(ctx, sb.GetId()))
	}
	return errors.Join(errs...)
}

// removePod stops and removes a pod as kubelet does, its containers first
// with no grace period (a test's sleep ignores SIGTERM as PID 1, and CRI-O
// would wait for it), trying again while the runtime still counts one of
// them running.
func (n *Node) removePod(ctx context.Context, id string) error {
	ctrs, err := n.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: id}})
	if err != nil {
		return fmt.Errorf("list the containers of pod %s: %w", id, err)
	}
	for _, c := range ctrs.GetContainers() {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			if _, err := n.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.GetId()}); err != nil {
				return fmt.Errorf("stop container %s: %w", c.GetId(), err)
			}
		}
	}
	for attempt := 1; ; attempt++ {
		if _, err := n.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			return fmt.Errorf("stop pod %s: %w", id, err)
		}
		_, err := n.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		// A container whose process exited as the pod was stopped is still
		// running to containerd until it has handled the exit.
		if err == nil || attempt == 10 || !strings.Contains(err.Error(), "still running") {
			if err != nil {
				return fmt.Errorf("remove pod %s: %w", id, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove pod %s: %w", id, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// nodeProcs are a node's processes: containerd, shims and runc carry its
// directory in their command line, container processes sit in its cgroups.
func nodeProcs(dir, cgroupParent string) ([]int, error) {
	pids, err := procsMentioning(dir + "/")
	if err != nil {
		return nil, err
	}
	inCgroups, err := cgroupProcs(cgroupParent)
	if err != nil {
		return nil, err
	}
	return append(pids, inCgroups...), nil
}

// removeBridge deletes the network bridge name, if the runtime made it.
func removeBridge(name string) error {
	if _, err := net.InterfaceByName(name); err != nil {
		return nil
	}
	return run(command(context.Background(), "ip", "link", "del", name))
}
