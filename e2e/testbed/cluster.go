package testbed

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The cluster's fixed places on the host. A DaemonSet mounts host paths, so
// the cluster cannot live in its node directory alone: containerd's NRI
// socket is where deploy/ mounts it, and one cluster at a time holds them
// (clusterLock).
const (
	clusterLock = "/run/cainjekt-cluster.lock"
	// NRISocketPath is containerd's NRI socket, where deploy/base mounts it.
	NRISocketPath = "/var/run/nri/nri.sock"
	// NodeName is the cluster's only node.
	NodeName = "cainjekt-e2e"
	// HostIP is the node's address on the pods' bridge: the API server,
	// the kubelet and servers of the tests listen there, and pods reach it.
	// Nothing the cluster sends leaves the machine: pods get no default route,
	// the service range is routed onto the bridge, and pods have no DNS.
	HostIP      = "10.244.0.1"
	bridgeName  = "cje0"
	podSubnet   = "10.244.0.0/24"
	serviceCIDR = "10.96.0.0/24"
	apiPort     = "6443"
	// kubeletHostDir is where the kubelet makes its device plugin directory
	// whatever its --root-dir says; kubeletDirMark says a cluster made it,
	// so that a run after one that died still removes it.
	kubeletHostDir = "/var/lib/kubelet"
	kubeletDirMark = "/run/cainjekt-cluster.made-var-lib-kubelet"
)

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	Bins       KubeBins
	PauseImage *Image
	Log        io.Writer // containerd's output; the Kubernetes daemons log to files in LogDir
	// HostDirs are host directories the cluster's workloads make (a
	// DaemonSet's hostPath volumes): removed before the cluster starts, so a
	// run that died leaves nothing to this one, and on Close.
	HostDirs []string
}

// Cluster is a single-node Kubernetes: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kube-proxy and a kubelet on the
// test bed's containerd (CRI and NRI) and runc, pods networked by the CNI
// bridge plugin.
type Cluster struct {
	Node       *Node
	Kubeconfig string // cluster-admin
	LogDir     string

	bins     KubeBins
	hostDirs []string
	dir      string // Node.Dir/k8s
	lock     *os.File
	daemons  []*daemon
	client   *http.Client // cluster-admin, for waiting on the API server
}

// StartCluster starts a cluster and waits until its node is Ready and the
// kubernetes Service routes to the API server. On failure everything it
// made is torn down.
func StartCluster(ctx context.Context, opts ClusterOptions) (c *Cluster, err error) {
	lock, err := os.OpenFile(clusterLock, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open cluster lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("take cluster lock: %w", err)
	}
	c = &Cluster{bins: opts.Bins, hostDirs: opts.HostDirs, lock: lock}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	// A run that died left its node (processes, mounts, cgroups) and its
	// network behind: the node first, so that no kube-proxy of it remakes
	// the rules.
	reclaimStaleNodes()
	c.cleanNetwork(ctx)
	if err := c.removeHostDirs(); err != nil {
		return c, err
	}
	if err := os.MkdirAll(filepath.Dir(NRISocketPath), 0o755); err != nil {
		return c, fmt.Errorf("create NRI socket dir: %w", err)
	}
	bins := opts.Bins.Shared
	bins.Runc = opts.Bins.Runc
	if c.Node, err = StartNode(ctx, NodeOptions{Bins: bins, PauseImage: opts.PauseImage, Log: opts.Log, NRISocket: NRISocketPath}); err != nil {
		return c, err
	}
	c.dir = filepath.Join(c.Node.Dir, "k8s")
	c.LogDir = filepath.Join(c.dir, "logs")
	if err := os.MkdirAll(c.LogDir, 0o755); err != nil {
		return c, fmt.Errorf("create cluster dir: %w", err)
	}
	if _, err := os.Stat(kubeletHostDir); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(kubeletDirMark, nil, 0o600); err != nil {
			return c, fmt.Errorf("mark %s as the cluster's: %w", kubeletHostDir, err)
		}
	}
	if err := c.setUpNetwork(ctx); err != nil {
		return c, err
	}
	pki, err := c.writePKI()
	if err != nil {
		return c, err
	}
	if err := c.startControlPlane(ctx, pki); err != nil {
		return c, err
	}
	if err := c.startKubelet(ctx); err != nil {
		return c, err
	}
	if err := c.startKubeProxy(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// setUpNetwork makes the pods' bridge with the host's address on it, routes
// the service range onto it, and gives containerd the CNI plugins and the
// network's config. Pods get a route to the service range and to the
// bridge's subnet only.
func (c *Cluster) setUpNetwork(ctx context.Context) error {
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", HostIP + "/24", "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
		// Host traffic to a service address that kube-proxy has not
		// translated (yet) stays on the bridge instead of taking the
		// default route off the machine.
		{"route", "add", serviceCIDR, "dev", bridgeName},
	} {
		if err := run(command(ctx, "ip", args...)); err != nil {
			return err
		}
	}
	cniBin, cniConf := c.Node.layout.CNIBin, c.Node.layout.CNIConf
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		data, err := os.ReadFile(filepath.Join(c.bins.CNI, plugin))
		if err != nil {
			return fmt.Errorf("read CNI plugin: %w", err)
		}
		if err := os.WriteFile(filepath.Join(cniBin, plugin), data, 0o755); err != nil {
			return fmt.Errorf("install CNI plugin: %w", err)
		}
	}
	conf, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "cainjekt-e2e",
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      bridgeName,
			"isGateway":   false, // no default route, no IP forwarding
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": filepath.Join(c.dir, "ipam"),
				"ranges":  [][]map[string]string{{{"subnet": podSubnet, "gateway": HostIP}}},
				"routes":  []map[string]string{{"dst": serviceCIDR, "gw": HostIP}},
			},
		}},
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("marshal CNI config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cniConf, "10-cainjekt-e2e.conflist"), conf, 0o644); err != nil {
		return fmt.Errorf("write CNI config: %w", err)
	}
	return nil
}

// cleanNetwork removes what setUpNetwork and kube-proxy put on the host.
// Each step may find nothing to do.
func (c *Cluster) cleanNetwork(ctx context.Context) error {
	var errs []error
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		errs = append(errs, run(command(ctx, "ip", "link", "del", bridgeName)))
	}
	// The route went with the bridge. kube-proxy's rules: its own cleanup.
	if _, err := os.Stat(c.bins.Path("kube-proxy")); err == nil {
		errs = append(errs, run(command(ctx, c.bins.Path("kube-proxy"), "--cleanup")))
	}
	errs = append(errs, removeKubeletChains(ctx))
	return errors.Join(errs...)
}

// kubeletChains are the iptables chains the kubelet makes, by table.
var kubeletChains = map[string][]string{
	"filter": {"KUBE-FIREWALL", "KUBE-KUBELET-CANARY"},
	"nat":    {"KUBE-KUBELET-CANARY"},
	"mangle": {"KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"},
}

// removeKubeletChains removes the chains the kubelet leaves behind, for
// IPv4 and IPv6, and checks that no KUBE- chain is left. Each removal may
// find nothing to remove, so their errors are not the verdict: what is left
// afterwards is.
func removeKubeletChains(ctx context.Context) error {
	var errs []error
	for _, tool := range []string{"iptables", "ip6tables"} {
		if _, err := lookTool(tool); err != nil {
			continue
		}
		ipt := func(args ...string) { run(command(ctx, tool, args...)) }
		ipt("-t", "filter", "-D", "INPUT", "-j", "KUBE-FIREWALL")
		ipt("-t", "filter", "-D", "OUTPUT", "-j", "KUBE-FIREWALL")
		for table, chains := range kubeletChains {
			for _, chain := range chains {
				ipt("-t", table, "-F", chain)
				ipt("-t", table, "-X", chain)
			}
		}
		out, err := command(ctx, tool+"-save").Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-save: %w", tool, err))
			continue
		}
		if bytes.Contains(out, []byte("KUBE-")) {
			errs = append(errs, fmt.Errorf("%s rules of Kubernetes are left on the host:\n%s", tool, out))
		}
	}
	return errors.Join(errs...)
}

// pki is the cluster's certificate authority and the files made from it.
type pki struct {
	ca, saKey, saPub, apiCert, apiKey, adminCert, adminKey string
	adminKubeconfig, kubeletKubeconfig                     string
}

// writePKI makes the cluster's CA, the API server's serving certificate,
// the service account signing key, and kubeconfigs for cluster-admin (the
// control plane's components, kube-proxy and the tests) and for the
// kubelet (system:node:NAME, as the Node authorizer requires).
func (c *Cluster) writePKI() (*pki, error) {
	dir := filepath.Join(c.dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki dir: %w", err)
	}
	ca, err := NewCA("cainjekt e2e cluster CA")
	if err != nil {
		return nil, err
	}
	p := &pki{ca: filepath.Join(dir, "ca.crt")}
	files := map[string][]byte{"ca.crt": ca.CertPEM}
	leaf := func(name string, tmpl x509.Certificate) (string, string, error) {
		cert, err := ca.issue(tmpl)
		if err != nil {
			return "", "", err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			return "", "", fmt.Errorf("marshal key: %w", err)
		}
		files[name+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		files[name+".key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), nil
	}
	if p.apiCert, p.apiKey, err = leaf("apiserver", x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP(HostIP), net.ParseIP(kubernetesServiceIP()), net.IPv4(127, 0, 0, 1)},
	}); err != nil {
		return nil, err
	}
	client := func(name, cn, org string) (string, string, error) {
		return leaf(name, x509.Certificate{
			Subject:     pkix.Name{CommonName: cn, Organization: []string{org}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
	}
	if p.adminCert, p.adminKey, err = client("admin", "cainjekt-e2e-admin", "system:masters"); err != nil {
		return nil, err
	}
	kubeletCert, kubeletKey, err := client("kubelet", "system:node:"+NodeName, "system:nodes")
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate service account key: %w", err)
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, fmt.Errorf("marshal service account key: %w", err)
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal service account key: %w", err)
	}
	files["sa.key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER})
	files["sa.pub"] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})
	p.saKey, p.saPub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	p.adminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
	p.kubeletKubeconfig = filepath.Join(dir, "kubelet.kubeconfig")
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := writeKubeconfig(p.adminKubeconfig, p.ca, p.adminCert, p.adminKey); err != nil {
		return nil, err
	}
	if err := writeKubeconfig(p.kubeletKubeconfig, p.ca, kubeletCert, kubeletKey); err != nil {
		return nil, err
	}
	c.Kubeconfig = p.adminKubeconfig
	adminPair, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return nil, fmt.Errorf("load admin certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{adminPair}},
	}}
	return p, nil
}

// kubernetesServiceIP is the first address of the service range, which the
// API server gives the kubernetes Service.
func kubernetesServiceIP() string {
	ip, _, _ := net.ParseCIDR(serviceCIDR)
	ip = ip.To4()
	ip[3]++
	return ip.String()
}

func writeKubeconfig(path, ca, cert, key string) error {
	data, err := json.MarshalIndent(map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"clusters":        []any{map[string]any{"name": "e2e", "cluster": map[string]string{"server": "https://" + net.JoinHostPort(HostIP, apiPort), "certificate-authority": ca}}},
		"users":           []any{map[string]any{"name": "e2e", "user": map[string]string{"client-certificate": cert, "client-key": key}}},
		"contexts":        []any{map[string]any{"name": "e2e", "context": map[string]string{"cluster": "e2e", "user": "e2e"}}},
		"current-context": "e2e",
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("marshal kubeconfig: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// admissionConfig limits the critical priority classes as GKE does (and
// Kubernetes' documentation shows, "Limit Priority Class consumption by
// default"): a pod of one is admitted only in a namespace with a
// ResourceQuota whose scope selects its class. deploy/base ships one for
// the DaemonSet's system-node-critical; without it the DaemonSet gets no
// pod ("insufficient quota to match these scopes").
const admissionConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: ResourceQuota
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: ResourceQuotaConfiguration
      limitedResources:
        - resource: pods
          matchScopes:
            - scopeName: PriorityClass
              operator: In
              values: [system-node-critical, system-cluster-critical]
`

// startControlPlane starts etcd, the API server, the controller manager and
// the scheduler, and waits until the API server is ready.
func (c *Cluster) startControlPlane(ctx context.Context, p *pki) error {
	etcdClient, err := FreeLoopbackAddr()
	if err != nil {
		return err
	}
	etcdPeer, err := FreeLoopbackAddr()
	if err != nil {
		return err
	}
	if err := c.start("etcd", "--name=e2e", "--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=http://"+etcdClient, "--advertise-client-urls=http://"+etcdClient,
		"--listen-peer-urls=http://"+etcdPeer, "--initial-advertise-peer-urls=http://"+etcdPeer,
		"--initial-cluster=e2e=http://"+etcdPeer, "--log-level=warn"); err != nil {
		return err
	}
	admission := filepath.Join(c.dir, "admission.yaml")
	if err := os.WriteFile(admission, []byte(admissionConfig), 0o644); err != nil {
		return fmt.Errorf("write admission config: %w", err)
	}
	if err := c.start("kube-apiserver",
		"--etcd-servers=http://"+etcdClient,
		"--bind-address="+HostIP, "--advertise-address="+HostIP, "--secure-port="+apiPort,
		"--service-cluster-ip-range="+serviceCIDR,
		"--tls-cert-file="+p.apiCert, "--tls-private-key-file="+p.apiKey,
		"--client-ca-file="+p.ca,
		"--service-account-key-file="+p.saPub, "--service-account-signing-key-file="+p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--admission-control-config-file="+admission,
		// kubectl exec and logs: the API server calls the kubelet.
		"--kubelet-client-certificate="+p.adminCert, "--kubelet-client-key="+p.adminKey,
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false", "--v=1"); err != nil {
		return err
	}
	if err := c.waitAPI(ctx, "/readyz", 2*time.Minute); err != nil {
		return err
	}
	if err := c.start("kube-controller-manager", "--kubeconfig="+p.adminKubeconfig,
		"--service-account-private-key-file="+p.saKey, "--root-ca-file="+p.ca,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0", "--v=1"); err != nil {
		return err
	}
	return c.start("kube-scheduler", "--kubeconfig="+p.adminKubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0", "--v=1")
}

// startKubelet starts the kubelet on the node's containerd and waits until
// the node is Ready. The configuration is what this cgroup v1 host needs
// (cgroupfs, no QoS cgroups) with pods below the node's cgroup parent, so
// that Node.Close finds them; everything of the kubelet's lives under its
// root directory.
func (c *Cluster) startKubelet(ctx context.Context) error {
	root := filepath.Join(c.dir, "kubelet")
	if err := os.MkdirAll(root, 0o750); err != nil {
		return fmt.Errorf("create kubelet dir: %w", err)
	}
	// Pods get no nameserver: nothing they look up can leave the machine.
	resolv := filepath.Join(c.dir, "resolv.conf")
	if err := os.WriteFile(resolv, nil, 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	config, err := json.MarshalIndent(map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"containerRuntimeEndpoint": "unix://" + c.Node.Address,
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupsPerQOS":            false,
		"cgroupRoot":               c.Node.cgroupParent,
		"enforceNodeAllocatable":   []string{},
		"failSwapOn":               false,
		"address":                  HostIP,
		"readOnlyPort":             0,
		"healthzBindAddress":       "127.0.0.1",
		"authentication": map[string]any{
			"anonymous": map[string]bool{"enabled": false},
			"webhook":   map[string]bool{"enabled": true},
			"x509":      map[string]string{"clientCAFile": filepath.Join(c.dir, "pki", "ca.crt")},
		},
		"authorization":       map[string]string{"mode": "Webhook"},
		"podLogsDirectory":    filepath.Join(c.dir, "pod-logs"),
		"resolvConf":          resolv,
		"clusterDomain":       "cluster.local",
		"registerNode":        true,
		"serializeImagePulls": false,
		// The test images are imported, never pulled: never collect them,
		// and never evict for a disk the tests do not fill.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard":                map[string]string{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("marshal kubelet config: %w", err)
	}
	configPath := filepath.Join(root, "config.json")
	if err := os.WriteFile(configPath, config, 0o644); err != nil {
		return fmt.Errorf("write kubelet config: %w", err)
	}
	if err := c.start("kubelet", "--config="+configPath, "--kubeconfig="+filepath.Join(c.dir, "pki", "kubelet.kubeconfig"),
		"--root-dir="+root, "--cert-dir="+filepath.Join(root, "pki"), "--node-ip="+HostIP,
		"--hostname-override="+NodeName, "--v=1"); err != nil {
		return err
	}
	return c.waitFor(ctx, "node "+NodeName+" Ready", 3*time.Minute, func() (bool, error) {
		out, err := c.Kubectl(ctx, "get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True", nil
	})
}

// startKubeProxy starts kube-proxy in iptables mode and waits until the
// kubernetes Service answers from the host: in-cluster clients, the
// plugin's namespace lookups among them, reach the API server through it.
func (c *Cluster) startKubeProxy(ctx context.Context) error {
	config, err := json.MarshalIndent(map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   map[string]string{"kubeconfig": c.Kubeconfig},
		"mode":               "iptables",
		"clusterCIDR":        podSubnet,
		"hostnameOverride":   NodeName,
		"bindAddress":        HostIP,
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		// The VM lacks CAP_SYS_RESOURCE to lower it.
		"oomScoreAdj": 0,
		// NodePorts only on the bridge, never on the machine's own network.
		"nodePortAddresses": []string{HostIP + "/32"},
		"iptables":          map[string]any{"localhostNodePorts": false},
		// Leave the machine's conntrack settings alone.
		"conntrack": map[string]any{"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("marshal kube-proxy config: %w", err)
	}
	configPath := filepath.Join(c.dir, "kube-proxy.json")
	if err := os.WriteFile(configPath, config, 0o644); err != nil {
		return fmt.Errorf("write kube-proxy config: %w", err)
	}
	if err := c.start("kube-proxy", "--config="+configPath, "--v=1"); err != nil {
		return err
	}
	url := "https://" + net.JoinHostPort(kubernetesServiceIP(), "443") + "/readyz"
	return c.waitFor(ctx, "the kubernetes Service", 2*time.Minute, func() (bool, error) {
		resp, err := c.client.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// waitAPI waits until path of the API server answers 200.
func (c *Cluster) waitAPI(ctx context.Context, path string, timeout time.Duration) error {
	url := "https://" + net.JoinHostPort(HostIP, apiPort) + path
	return c.waitFor(ctx, "kube-apiserver "+path, timeout, func() (bool, error) {
		resp, err := c.client.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// waitFor polls ready until it says true, fails, a daemon dies, or timeout
// passes.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, ready func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := ready()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if err := c.checkDaemons(); err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Kubectl runs kubectl as cluster-admin and returns its trimmed stdout; an
// error carries stderr.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlIn(ctx, nil, args...)
}

// KubectlIn is Kubectl with stdin.
func (c *Cluster) KubectlIn(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bins.Path("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Env is the environment in which kubectl, kustomize and ctr, run by name,
// act on this cluster and its node as on a user's.
func (c *Cluster) Env() []string {
	return withEnv("KUBECONFIG="+c.Kubeconfig, "CONTAINERD_ADDRESS="+c.Node.Address,
		"PATH="+c.bins.Dir+":"+c.bins.Shared.Dir+":"+os.Getenv("PATH"))
}

// daemon is a running Kubernetes component.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error
	logPath string
}

// start runs the Kubernetes binary name in its own process group, logging
// to LogDir/name.log.
func (c *Cluster) start(name string, args ...string) error {
	logPath := filepath.Join(c.LogDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create %s log: %w", name, err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(c.bins.Path(name), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = withEnv("PATH=" + standardPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	c.daemons = append(c.daemons, d)
	return nil
}

// checkDaemons fails when a component has exited, with its log's tail.
func (c *Cluster) checkDaemons() error {
	for _, d := range c.daemons {
		select {
		case <-d.exited:
			data, _ := os.ReadFile(d.logPath)
			return fmt.Errorf("%s exited (%v):\n%s", d.name, d.err, tail(string(data), 30))
		default:
		}
	}
	return nil
}

// Close stops the components (newest first: kube-proxy and the kubelet
// before the control plane), removes the pods and the node, kube-proxy's
// rules, the bridge and the route, and what the kubelet left outside its
// root directory. A second Close does nothing.
func (c *Cluster) Close() error {
	if c.lock == nil {
		return nil
	}
	var errs []error
	for i := len(c.daemons) - 1; i >= 0; i-- {
		d := c.daemons[i]
		if err := terminate(d.cmd.Process, d.exited, 20*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", d.name, err))
		}
	}
	c.daemons = nil
	if c.Node != nil {
		errs = append(errs, c.Node.Close())
	}
	errs = append(errs, c.cleanNetwork(context.Background()), c.removeHostDirs())
	if _, err := os.Stat(kubeletDirMark); err == nil {
		errs = append(errs, os.RemoveAll(kubeletHostDir), os.Remove(kubeletDirMark))
	}
	errs = append(errs, c.lock.Close())
	c.lock = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close cluster: %w", err)
	}
	return nil
}

// removeHostDirs removes HostDirs, unmounting what is mounted below them.
func (c *Cluster) removeHostDirs() error {
	var errs []error
	for _, dir := range c.hostDirs {
		errs = append(errs, removeTree(dir))
	}
	return errors.Join(errs...)
}

// Tail returns the last lines of each component's log, for a failed test.
func (c *Cluster) Tail(lines int) string {
	var b strings.Builder
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		data, err := os.ReadFile(filepath.Join(c.LogDir, name+".log"))
		if err != nil {
			continue
		}
		b.WriteString("--- " + name + " (last " + strconv.Itoa(lines) + " lines)\n" + tail(string(data), lines) + "\n")
	}
	return b.String()
}
