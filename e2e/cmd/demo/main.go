// Command demo shows cainjekt on a private real node: the same pod, without
// and with the opt-in annotation, calling an HTTPS server whose CA no image
// trusts. Run it with `make demo` (root).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cainjekt/cainjekt/e2e/testbed"
)

func main() {
	bin := flag.String("cainjekt", "", "path of the cainjekt binary")
	flag.Parse()
	if err := demo(*bin); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// progress prints the test bed's build steps, which only the first run sees.
func progress(format string, args ...any) { fmt.Printf("  … "+format+"\n", args...) }

func demo(bin string) error {
	if bin == "" {
		return fmt.Errorf("--cainjekt is required")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo runs containerd: it needs root")
	}
	// Ctrl-C cancels: the node is stopped and removed on the way out, not left running.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Minute)
	defer cancel()

	say("Setting up a private node (containerd, runc and images are built once and cached in %s)", testbed.CacheDir())
	bins, err := testbed.EnsureBinaries(ctx, progress)
	if err != nil {
		return err
	}
	pause, err := testbed.BuildPauseImage(ctx, progress)
	if err != nil {
		return err
	}
	image, err := testbed.BuildDebianImage(ctx, testbed.DebianTestImage(), progress)
	if err != nil {
		return err
	}
	node, err := testbed.StartNode(ctx, testbed.NodeOptions{Bins: bins, PauseImage: pause})
	if err != nil {
		return err
	}
	defer node.Close()
	if err := node.ImportImage(ctx, image); err != nil {
		return err
	}

	ca, err := testbed.NewCA("Example Corp Root CA (demo)")
	if err != nil {
		return err
	}
	server, err := ca.Serve()
	if err != nil {
		return err
	}
	defer server.Close()
	dir, err := os.MkdirTemp("", "cainjekt-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	caFile := filepath.Join(dir, "ca-bundle.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		return err
	}
	plugin, err := testbed.StartPlugin(testbed.PluginOptions{
		Bin: bin, Socket: node.NRISocket, CAFile: caFile, DynamicCARoot: filepath.Join(dir, "staging"),
	})
	if err != nil {
		return err
	}
	defer plugin.Stop()
	if err := plugin.WaitReady(ctx); err != nil {
		return err
	}

	say("")
	say("Node:   containerd %s with NRI, runc %s, pods driven over CRI as kubelet does", testbed.ContainerdVersion, testbed.RuncVersion)
	say("Plugin: cainjekt plugin, CA file %s holding %q", caFile, ca.Cert.Subject.CommonName)
	say("Server: %s, certificate signed by that CA, which no image trusts", server.URL)
	say("Image:  Debian bookworm with curl and python3-requests, unchanged")
	say("")

	without, err := runDemoPod(ctx, node, image, "without-cainjekt", nil)
	if err != nil {
		return err
	}
	with, err := runDemoPod(ctx, node, image, "with-cainjekt", map[string]string{"cainjekt.natron.io/enabled": "true"})
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintf(tw, "\tpod without annotation\tpod with cainjekt.natron.io/enabled: \"true\"\n")
	for _, probe := range probes(server.URL) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", probe.name, without.run(ctx, probe.cmd), with.run(ctx, probe.cmd))
	}
	tw.Flush()

	say("")
	say("What the hook did in the injected container (/etc/cainjekt/status.json, abridged):")
	stdout, _, _, err := node.Exec(ctx, with.id, []string{"cat", "/etc/cainjekt/status.json"}, time.Minute)
	if err != nil {
		return err
	}
	printStatus(stdout)
	n, _ := plugin.Metric("cainjekt_injections_total")
	ok, _ := plugin.Metric(`cainjekt_hook_runs_total{result="ok"}`)
	say("")
	say("Plugin metrics: cainjekt_injections_total %v, cainjekt_hook_runs_total{result=\"ok\"} %v", n, ok)
	say("Tearing the node down.")
	return nil
}

type demoPod struct {
	node *testbed.Node
	id   string
}

func runDemoPod(ctx context.Context, node *testbed.Node, image *testbed.Image, name string, ann map[string]string) (*demoPod, error) {
	pod, err := node.RunPod(ctx, testbed.PodSpec{Name: name, Namespace: "demo", Annotations: ann})
	if err != nil {
		return nil, err
	}
	id, err := pod.Run(ctx, testbed.ContainerSpec{Name: "app", Image: image.Ref, Command: []string{"sleep", "3600"}})
	if err != nil {
		return nil, err
	}
	return &demoPod{node: node, id: id}, nil
}

type probe struct {
	name string
	cmd  []string
}

func probes(url string) []probe {
	return []probe{
		{"curl " + url, []string{"curl", "-sS", "-o", "/dev/null", url}},
		{"python3 requests.get()", []string{"python3", "-c", "import requests, sys; requests.get(sys.argv[1], timeout=20)", url}},
		{"curl, with SSL_CERT_FILE unset", []string{"env", "-u", "SSL_CERT_FILE", "curl", "-sS", "-o", "/dev/null", url}},
		{"echo $SSL_CERT_FILE (kubectl exec)", []string{"sh", "-c", `echo "${SSL_CERT_FILE:-(unset)}"`}},
	}
}

// run execs cmd in the pod's container and sums up the outcome in a cell.
func (p *demoPod) run(ctx context.Context, cmd []string) string {
	stdout, stderr, code, err := p.node.Exec(ctx, p.id, cmd, time.Minute)
	switch {
	case err != nil:
		return "error: " + err.Error()
	case strings.HasPrefix(cmd[0], "sh"):
		return strings.TrimSpace(stdout)
	case code == 0:
		return "OK"
	}
	return fmt.Sprintf("FAIL (exit %d: %s)", code, lastError(stderr))
}

// lastError picks the line of stderr that says what went wrong.
func lastError(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "certificate verify failed") {
			return "certificate verify failed"
		}
		if msg, ok := strings.CutPrefix(line, "curl: "); ok {
			// "(60) SSL certificate problem: …": the exit code is shown already.
			if _, after, found := strings.Cut(msg, ") "); found && strings.HasPrefix(msg, "(") {
				return after
			}
			return msg
		}
	}
	return strings.TrimSpace(stderr)
}

func printStatus(raw string) {
	var st struct {
		Result    string `json:"result"`
		Family    string `json:"family"`
		OSRelease struct {
			PrettyName string `json:"pretty_name"`
		} `json:"os_release"`
		ImageCerts int `json:"image_certificates"`
		Files      []struct {
			Path   string `json:"path"`
			Action string `json:"action"`
			Added  int    `json:"added"`
		} `json:"files"`
		DurationMS float64 `json:"duration_ms"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		say("  (unreadable: %v)", err)
		return
	}
	say("  result %s in %.1f ms; %s, family %s; the image trusted %d CAs", st.Result, st.DurationMS, st.OSRelease.PrettyName, st.Family, st.ImageCerts)
	for _, f := range st.Files {
		say("  %-8s %s (+%d)", f.Action, f.Path, f.Added)
	}
}
