package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// addRuntimes puts language runtimes into a fixture rootfs the way Debian
// and a virtualenv lay them out: a JVM whose cacerts is a symlink into
// /etc/ssl/certs/java, found through /usr/bin/java -> /etc/alternatives,
// and a venv with a pip-installed certifi, found through PATH.
func addRuntimes(t testing.TB, rootfs, cacertsFixture string) {
	t.Helper()
	jvm := "/usr/lib/jvm/java-17-openjdk-amd64"
	writeTree(t, rootfs, map[string]string{
		jvm + "/bin/java":             "#!/bin/sh\n",
		"/etc/alternatives/java":      "->" + jvm + "/bin/java",
		"/usr/bin/java":               "->/etc/alternatives/java",
		jvm + "/lib/security/cacerts": "->/etc/ssl/certs/java/cacerts",
		"/opt/venv/bin/python3":       "->/usr/bin/python3",
		"/usr/bin/python3":            "#!/bin/sh\n",
		"/opt/venv/lib/python3.11/site-packages/certifi/cacert.pem": string(readTestdata(t, "certs/public-a.pem")),
		"/opt/venv/lib/python3.11/site-packages/certifi/core.py":    "def where():\n    return os.path.join(os.path.dirname(__file__), \"cacert.pem\")\n",
		// Debian's python3-certifi: patched to the OS bundle, its cacert.pem unread.
		"/usr/lib/python3/dist-packages/certifi/cacert.pem": string(readTestdata(t, "certs/public-b.pem")),
		"/usr/lib/python3/dist-packages/certifi/core.py":    "def where():\n    return \"/etc/ssl/certs/ca-certificates.crt\"\n",
		// Debian's python3-grpcio: the roots its C core gets from Python.
		"/usr/lib/python3/dist-packages/grpc/_cython/_credentials/roots.pem": string(readTestdata(t, "certs/public-c.pem")),
	})
	writeTree(t, rootfs, map[string]string{"/etc/ssl/certs/java/cacerts": string(readTestdata(t, "java/"+cacertsFixture))})
}

const runtimesPATH = "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func TestFindRuntimeTrustFiles(t *testing.T) {
	b := newHookBed(t, "debian")
	addRuntimes(t, b.rootfs, "cacerts.jks")
	root := imageRoot(t, b.rootfs)
	env := []string{runtimesPATH}
	if got, _ := certifiBundles(&injection{root: root, env: env}); strings.Join(got, " ") != "/opt/venv/lib/python3.11/site-packages/certifi/cacert.pem" {
		t.Errorf("certifi bundles %v, want the venv's only (Debian's certifi serves the OS bundle)", got)
	}
	// A certifi without its source (only .pyc files) is taken to serve its bundle.
	if err := os.Remove(filepath.Join(b.rootfs, "opt/venv/lib/python3.11/site-packages/certifi/core.py")); err != nil {
		t.Fatal(err)
	}
	if got, _ := certifiBundles(&injection{root: root, env: env}); len(got) != 1 {
		t.Errorf("certifi bundles without core.py %v, want the venv's", got)
	}
	if got, _ := javaStores(&injection{root: root, env: env}); strings.Join(got, " ") != "/etc/ssl/certs/java/cacerts" {
		t.Errorf("java stores %v", got)
	}
	if got, _ := grpcRoots(&injection{root: root, env: env}); strings.Join(got, " ") != "/usr/lib/python3/dist-packages/grpc/_cython/_credentials/roots.pem" {
		t.Errorf("grpc roots %v", got)
	}
	// /usr/lib/jvm may itself be a symlink, inside the image.
	if err := os.Rename(filepath.Join(b.rootfs, "usr/lib/jvm"), filepath.Join(b.rootfs, "opt/jdks")); err != nil {
		t.Fatal(err)
	}
	writeTree(t, b.rootfs, map[string]string{"/usr/lib/jvm": "->/opt/jdks"})
	if got, _ := javaStores(&injection{root: root, env: []string{"PATH=/nowhere"}}); strings.Join(got, " ") != "/etc/ssl/certs/java/cacerts" {
		t.Errorf("java stores through a symlinked /usr/lib/jvm %v", got)
	}
	// JAVA_HOME alone finds a JVM outside PATH and the usual places.
	writeTree(t, b.rootfs, map[string]string{"/srv/jdk/lib/security/cacerts": "x"})
	if got, _ := javaStores(&injection{root: root, env: []string{"JAVA_HOME=/srv/jdk"}}); len(got) != 2 || got[0] != "/srv/jdk/lib/security/cacerts" {
		t.Errorf("java stores with JAVA_HOME %v", got)
	}
}

func TestHookMergesLanguageRuntimes(t *testing.T) {
	b := newHookBed(t, "debian", runtimesPATH)
	addRuntimes(t, b.rootfs, "cacerts.jks")
	if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		st, _ := b.status(t)
		t.Fatalf("exit %d: %v", code, st.Errors)
	}
	certifi := b.read(t, filepath.Join(b.rootfs, "opt/venv/lib/python3.11/site-packages/certifi/cacert.pem"))
	if countCerts(certifi) != 3 {
		t.Errorf("certifi bundle holds %d certificates, want its 1 and our 2", countCerts(certifi))
	}
	if roots := b.read(t, filepath.Join(b.rootfs, "usr/lib/python3/dist-packages/grpc/_cython/_credentials/roots.pem")); countCerts(roots) != 3 {
		t.Errorf("grpcio's roots.pem holds %d certificates, want its 1 and our 2", countCerts(roots))
	}
	store, err := parseJavaStore(b.read(t, filepath.Join(b.rootfs, "etc/ssl/certs/java/cacerts")))
	if err != nil || store.format != storeJKS || len(store.entries) != 5 {
		t.Fatalf("cacerts after the hook: %v %+v", err, store)
	}
	_, ctx := b.status(t)
	if len(ctx.Append) != 0 || len(ctx.Env) != 0 {
		t.Errorf("no wrapper variables needed when cacerts was merged in place: %+v", ctx)
	}
}

func TestHookGivesAnUnreadableJVMStoreAFallback(t *testing.T) {
	b := newHookBed(t, "debian", runtimesPATH)
	addRuntimes(t, b.rootfs, "cacerts-changeit.p12")
	before := b.read(t, filepath.Join(b.rootfs, "etc/ssl/certs/java/cacerts"))
	if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if after := b.read(t, filepath.Join(b.rootfs, "etc/ssl/certs/java/cacerts")); string(after) != string(before) {
		t.Error("an encrypted cacerts was rewritten")
	}
	st, ctx := b.status(t)
	var fallback bool
	for _, f := range st.Files {
		fallback = fallback || f.Path == "/etc/ssl/certs/java/cacerts" && f.Action == "fallback"
	}
	if !fallback {
		t.Errorf("status does not report the fallback: %+v", st.Files)
	}
	want := "-Djavax.net.ssl.trustStore=/etc/cainjekt/java-cacerts.jks -Djavax.net.ssl.trustStoreType=JKS -Djavax.net.ssl.trustStorePassword=changeit"
	if ctx.Append["JAVA_TOOL_OPTIONS"] != want {
		t.Errorf("context %+v", ctx)
	}
	env, _ := wrapperEnv(filepath.Join(b.staging, stagedStatus), []string{"JAVA_TOOL_OPTIONS=-Xmx1g"})
	if envValue(env, "JAVA_TOOL_OPTIONS") != "-Xmx1g "+want {
		t.Errorf("the pod's JAVA_TOOL_OPTIONS must be kept and ours appended: %v", env)
	}
	// The fallback store holds the image's trust and ours, and the JDK reads it.
	p := filepath.Join(b.staging, stagedJavaStore)
	store, err := parseJavaStore(b.read(t, p))
	if err != nil || len(store.entries) != 5 {
		t.Fatalf("fallback store: %v", err)
	}
	keytool := requireTool(t, "keytool")
	out, err := exec.Command(keytool, "-list", "-keystore", p, "-storetype", "JKS", "-storepass", "changeit").CombinedOutput()
	if err != nil || strings.Count(string(out), "trustedCertEntry") != 5 {
		t.Errorf("keytool: %v\n%s", err, out)
	}
}

func TestHookMergesTheBundleThePodNames(t *testing.T) {
	b := newHookBed(t, "debian", "PATH=/usr/bin:/bin", "SSL_CERT_FILE=/app/certs/bundle.pem",
		"REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt", "NODE_EXTRA_CA_CERTS=/mounted/by/a/volume.pem")
	writeTree(t, b.rootfs, map[string]string{"/app/certs/bundle.pem": string(readTestdata(t, "certs/public-a.pem"))})
	if code := runHook(b.args(failClosed), strings.NewReader(string(b.state())), io.Discard, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := countCerts(b.read(t, filepath.Join(b.rootfs, "app/certs/bundle.pem"))); n != 3 {
		t.Errorf("the bundle SSL_CERT_FILE names holds %d certificates, want its 1 and our 2", n)
	}
	st, _ := b.status(t)
	seen := map[string]int{}
	for _, f := range st.Files {
		seen[f.Path]++
	}
	if seen["/etc/ssl/certs/ca-certificates.crt"] != 1 || seen["/app/certs/bundle.pem"] != 1 {
		t.Errorf("each file merged once: %v", seen)
	}
}
