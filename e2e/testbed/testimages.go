package testbed

import (
	"context"
	"os"
	"strings"
)

// DebianTestImage is the default image for tests: curl and Python (requests) clients
// using the system trust store.
func DebianTestImage() ImageSpec {
	return ImageSpec{
		Name:     "debian",
		Suite:    "bookworm",
		Packages: []string{"ca-certificates", "curl", "python3", "python3-requests"},
	}
}

// venv is a Python virtual environment in the runtimes image, first in its PATH, with a
// pip-style certifi of its own: a bundle that is not Debian's patched one.
const venv = "/opt/venv"

// EncryptedJDK is a JAVA_HOME in the runtimes image whose cacerts cainjekt cannot rewrite.
const EncryptedJDK = "/opt/encrypted-jdk"

// DenoVersion is the Deno release in the runtimes image, from the npm registry.
const DenoVersion = "2.9.6"

// RuntimesTestImage is the image of the language matrix: every runtime and tool whose
// trust cainjekt must prove, from Debian's packages, plus
//   - /opt/probe/Probe.class: HttpsURLConnection and java.net.http.HttpClient clients,
//     compiled at build time (the JDK is removed again, the JRE stays);
//   - /opt/venv: a virtualenv with a pip-style certifi whose bundle holds pub and the
//     Mozilla roots (Debian's), as large as a pip-installed one, and /opt/app/app.py,
//     which calls requests with verify=certifi.where(), as httpx and many apps do;
//   - /usr/local/bin/deno, which Debian does not package, from the npm registry;
//   - /opt/encrypted-jdk/lib/security/cacerts: the JVM's roots as a password-protected
//     PKCS#12, a store cainjekt cannot rewrite, for a pod that points JAVA_HOME there.
func RuntimesTestImage(ctx context.Context, pub *CA, log func(string, ...any)) (ImageSpec, error) {
	deno, err := NpmFile(ctx, "@deno/linux-x64-glibc", DenoVersion, "deno", log)
	if err != nil {
		return ImageSpec{}, err
	}
	return ImageSpec{
		Name:  "runtimes",
		Suite: "bookworm",
		Packages: []string{"ca-certificates", "curl", "wget", "openssl", "git", "python3", "python3-requests",
			"python3-pip", "python3-botocore", "python3-grpcio", "nodejs", "openjdk-17-jre-headless", "openjdk-17-jdk-headless",
			"ruby", "php-cli"},
		Env: []string{"PATH=" + venv + "/bin:" + standardPath},
		Files: []File{
			{Path: "/usr/local/bin/deno", Mode: 0o755, Data: deno},
			{Path: "/opt/probe/Probe.java", Mode: 0o644, Data: []byte(javaProbe)},
			{Path: "/opt/app/app.py", Mode: 0o755, Data: []byte(certifiApp)},
			{Path: venv + "/lib/python3.11/site-packages/certifi/__init__.py", Mode: 0o644, Data: []byte("from .core import where\n")},
			{Path: venv + "/lib/python3.11/site-packages/certifi/core.py", Mode: 0o644, Data: []byte(certifiCore)},
			{Path: venv + "/lib/python3.11/site-packages/certifi/cacert.pem", Mode: 0o644, Data: pub.CertPEM},
		},
		Setup: [][]string{
			{"python3", "-m", "venv", "--without-pip", "--system-site-packages", venv},
			{"sh", "-c", "cat /etc/ssl/certs/ca-certificates.crt >>" + venv + "/lib/python3.11/site-packages/certifi/cacert.pem"},
			{"javac", "-d", "/opt/probe", "/opt/probe/Probe.java"},
			{"mkdir", "-p", EncryptedJDK + "/lib/security"},
			{"keytool", "-importkeystore", "-noprompt", "-srckeystore", "/etc/ssl/certs/java/cacerts", "-srcstorepass", "changeit",
				"-destkeystore", EncryptedJDK + "/lib/security/cacerts", "-deststoretype", "PKCS12", "-deststorepass", "changeit"},
			{"apt-get", "purge", "-y", "-qq", "openjdk-17-jdk-headless"},
		},
	}, nil
}

// ScratchTestImage is an image with nothing but a static Go client, /tlsget: no shell, no
// os-release, no trust store.
func ScratchTestImage(ctx context.Context, log func(string, ...any)) (*Image, error) {
	tlsget, err := GoProgram(ctx, "tlsget", log)
	if err != nil {
		return nil, err
	}
	return BuildFilesImage(ctx, "scratch-go", []File{{Path: "/tlsget", Mode: 0o755, Data: tlsget}},
		ImageConfig{Entrypoint: []string{"/tlsget"}}, log)
}

// DistrolessTestImage is laid out like gcr.io/distroless/static-debian12: os-release,
// a trust store holding pub, passwd and group, no shell, no package manager, and
// SSL_CERT_FILE set in its config; its program is /tlsget.
func DistrolessTestImage(ctx context.Context, pub *CA, log func(string, ...any)) (*Image, error) {
	tlsget, err := GoProgram(ctx, "tlsget", log)
	if err != nil {
		return nil, err
	}
	bundle := "/etc/ssl/certs/ca-certificates.crt"
	img, err := BuildFilesImage(ctx, "distroless", []File{
		{Path: "/tlsget", Mode: 0o755, Data: tlsget},
		{Path: "/usr/lib/os-release", Mode: 0o644, Data: []byte(distrolessOSRelease)},
		{Path: "/etc/os-release", Link: "../usr/lib/os-release"},
		{Path: bundle, Mode: 0o644, Data: pub.CertPEM},
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnonroot:x:65532:\n")},
	}, ImageConfig{Entrypoint: []string{"/tlsget"}, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=" + bundle}}, log)
	if err != nil {
		return nil, err
	}
	img.OriginalBundle = pub.CertPEM
	return img, nil
}

const distrolessOSRelease = `PRETTY_NAME="Distroless"
NAME="Debian GNU/Linux"
ID="debian"
VERSION_ID="12"
VERSION="Debian GNU/Linux 12 (bookworm)"
HOME_URL="https://github.com/GoogleContainerTools/distroless"
`

var javaProbe = strings.TrimSpace(`
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import javax.net.ssl.HttpsURLConnection;

// Probe urlconnection|httpclient URL: exits 0 if the HTTPS call succeeds.
public class Probe {
    public static void main(String[] args) throws Exception {
        int status;
        if (args[0].equals("urlconnection")) {
            HttpsURLConnection c = (HttpsURLConnection) new URL(args[1]).openConnection();
            status = c.getResponseCode();
        } else {
            HttpRequest req = HttpRequest.newBuilder(URI.create(args[1])).build();
            status = HttpClient.newHttpClient().send(req, HttpResponse.BodyHandlers.discarding()).statusCode();
        }
        System.exit(status == 200 ? 0 : 2);
    }
}
`) + "\n"

const certifiCore = `import os

def where():
    return os.path.join(os.path.dirname(__file__), "cacert.pem")
`

const certifiApp = `#!/opt/venv/bin/python3
# An app that verifies with certifi's bundle explicitly, as httpx does by default:
# only a bundle that holds the CA makes it trust a server.
import sys
import certifi
import requests

requests.get(sys.argv[1], verify=certifi.where(), timeout=20)
`

// Labels is the image the xattr test runs: /pause, and a trust store holding the public
// test CA and carrying extended attributes, an SELinux label among them.
func LabelsTestImage(ctx context.Context, pub *CA, xattrs map[string]string, log func(string, ...any)) (*Image, error) {
	pause, err := GoProgram(ctx, "pause", log)
	if err != nil {
		return nil, err
	}
	return BuildFilesImage(ctx, "labels", []File{
		{Path: "/pause", Mode: 0o755, Data: pause},
		{Path: "/" + bundleFile, Mode: 0o644, Data: pub.CertPEM, Xattrs: xattrs},
	}, ImageConfig{Entrypoint: []string{"/pause"}}, log)
}

// HostileSentinel is a path on the node that the hostile image's trust store points at.
const HostileSentinel = "/tmp/cainjekt-e2e-host/ca-certificates.crt"

// HostileTestImage is an image whose author attacks the hook: its trust store is a symlink
// to HostileSentinel, a file of the node, and its os-release is a FIFO. Its program is
// /tlsget.
func HostileTestImage(ctx context.Context, log func(string, ...any)) (*Image, error) {
	tlsget, err := GoProgram(ctx, "tlsget", log)
	if err != nil {
		return nil, err
	}
	return BuildFilesImage(ctx, "hostile", []File{
		{Path: "/tlsget", Mode: 0o755, Data: tlsget},
		{Path: "/etc/ssl/certs/ca-certificates.crt", Link: HostileSentinel},
		{Path: "/etc/os-release", Mode: os.ModeNamedPipe | 0o644},
	}, ImageConfig{Entrypoint: []string{"/tlsget"}}, log)
}
