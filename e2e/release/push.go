package release

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cainjekt/cainjekt/e2e/oci"
)

// Push uploads the image of an OCI layout archive (make image's) to ref,
// HOST/REPOSITORY:TAG, with the registry API of the OCI distribution spec:
// every blob the registry lacks, each platform's manifest by its digest,
// then the index by the tag. It needs nothing but Go: no Docker, no skopeo.
// It returns the index's digest, which names exactly what was pushed.
//
// It logs in as docker, podman and skopeo left it (credentials). A
// registry on the loopback is spoken to in plain HTTP, as containerd and
// Docker do; any other over HTTPS, verified with the system's CAs.
func Push(ctx context.Context, archive, ref string) (string, error) {
	r, err := parseRef(ref)
	if err != nil {
		return "", err
	}
	layout, err := oci.ReadArchive(archive)
	if err != nil {
		return "", err
	}
	c := &registry{ref: r, client: &http.Client{Timeout: 5 * time.Minute}}
	if err := c.pushTree(ctx, layout, layout.Image, r.tag); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return layout.Image.Digest, nil
}

// reference is an image reference split for the registry API.
type reference struct {
	host     string // as the user wrote it: where credentials are kept
	api      string // scheme://host of the registry API
	repo     string // the repository, below the host
	tag      string
	loopback bool
}

// validTag is the OCI distribution spec's tag.
var validTag = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

func parseRef(ref string) (reference, error) {
	host, rest, ok := strings.Cut(ref, "/")
	colon := strings.LastIndex(rest, ":")
	if !ok || colon < 0 || strings.Contains(rest[colon:], "/") || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return reference{}, fmt.Errorf("image %q is not HOST/REPOSITORY:TAG", ref)
	}
	r := reference{host: host, repo: rest[:colon], tag: rest[colon+1:]}
	if r.repo == "" || r.repo != strings.ToLower(r.repo) || !validTag.MatchString(r.tag) {
		return reference{}, fmt.Errorf("image %q: the repository must be lower case, the tag letters, digits and ._- (128 at most)", ref)
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	ip := net.ParseIP(name)
	r.loopback = name == "localhost" || ip != nil && ip.IsLoopback()
	switch {
	case r.loopback:
		r.api = "http://" + host
	case host == "docker.io": // Docker Hub's API is elsewhere
		r.api = "https://registry-1.docker.io"
	default:
		r.api = "https://" + host
	}
	return r, nil
}

// registry is a client of one repository of a registry.
type registry struct {
	ref    reference
	client *http.Client
	auth   string // the Authorization header, once a challenge asked for one
}

// pushTree pushes what d points at, then d itself: a blob, or a manifest
// or index, by digest or, for the image itself, by tag.
func (c *registry) pushTree(ctx context.Context, layout *oci.Layout, d oci.Descriptor, tag string) error {
	children, err := layout.Children(d)
	if err != nil {
		return err
	}
	for _, child := range children {
		if err := c.pushTree(ctx, layout, child, ""); err != nil {
			return err
		}
	}
	data, err := layout.Blob(d)
	if err != nil {
		return err
	}
	if d.MediaType == oci.MediaTypeIndex || d.MediaType == oci.MediaTypeManifest {
		return c.putManifest(ctx, d, data, tag)
	}
	return c.putBlob(ctx, d, data)
}

// putBlob uploads a blob unless the registry has it: a POST opens the
// upload, one PUT carries the content and its digest.
func (c *registry) putBlob(ctx context.Context, d oci.Descriptor, data []byte) error {
	resp, err := c.do(ctx, http.MethodHead, c.url("blobs/"+d.Digest), nil, "")
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	resp, err = c.do(ctx, http.MethodPost, c.url("blobs/uploads/"), nil, "")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start the upload of %s: %s", d.Digest, status(resp))
	}
	location, err := resp.Location()
	if err != nil {
		return fmt.Errorf("start the upload of %s: %w", d.Digest, err)
	}
	q := location.Query()
	q.Set("digest", d.Digest)
	location.RawQuery = q.Encode()
	resp, err = c.do(ctx, http.MethodPut, location.String(), data, "application/octet-stream")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("upload %s: %s", d.Digest, status(resp))
	}
	return nil
}

// putManifest uploads a manifest or an index by tag, or by its digest.
func (c *registry) putManifest(ctx context.Context, d oci.Descriptor, data []byte, tag string) error {
	resp, err := c.do(ctx, http.MethodPut, c.url("manifests/"+cmp.Or(tag, d.Digest)), data, d.MediaType)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("put %s %s: %s", d.MediaType, d.Digest, status(resp))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.Digest {
		return fmt.Errorf("put %s: the registry stored it as %s", d.Digest, got)
	}
	return nil
}

func (c *registry) url(path string) string {
	return c.ref.api + "/v2/" + c.ref.repo + "/" + path
}

// maxBody bounds what is read of a registry's answer: error messages and
// tokens.
const maxBody = 64 << 10

// do sends a request; where the registry answers 401 with a challenge, it
// earns the Authorization header the challenge asks for and sends the
// request once more. The response's body is read, bounded, and closed:
// status() says it.
func (c *registry) do(ctx context.Context, method, target string, body []byte, contentType string) (*http.Response, error) {
	for retried := false; ; retried = true {
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, target, err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, target, err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(readBounded(resp.Body)))
		switch {
		case resp.StatusCode != http.StatusUnauthorized:
			return resp, nil
		case retried:
			return nil, fmt.Errorf("%s refuses %s %s with the login it asked for: %s (%s)", c.ref.host, method, target, status(resp), authFilesHint)
		}
		if err := c.authenticate(ctx, resp.Header.Get("WWW-Authenticate")); err != nil {
			return nil, err
		}
	}
}

func readBounded(body io.ReadCloser) []byte {
	defer body.Close()
	data, _ := io.ReadAll(io.LimitReader(body, maxBody))
	return data
}

// status is a failed answer for an error message: its status and what the
// registry said.
func status(resp *http.Response) string {
	data, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(resp.Status + " " + string(data))
}

// authenticate answers a registry's challenge: Basic takes the user's
// credentials as they are; Bearer trades them (or nothing, for an anonymous
// token) at the challenge's realm for a token to push this repository.
func (c *registry) authenticate(ctx context.Context, challenge string) error {
	scheme, params := parseChallenge(challenge)
	user, secret, err := credentials(ctx, c.ref.host)
	if err != nil {
		return err
	}
	basic := ""
	if user != "" || secret != "" {
		basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+secret))
	}
	switch scheme {
	case "basic":
		if basic == "" {
			return fmt.Errorf("%s asks for a login, and none is stored for it (docker login, podman login, or %s)", c.ref.host, authFilesHint)
		}
		c.auth = basic
		return nil
	case "bearer":
		token, err := c.token(ctx, params["realm"], params["service"], basic)
		if err != nil {
			return err
		}
		c.auth = "Bearer " + token
		return nil
	}
	return fmt.Errorf("%s answers 401 with the challenge %q, which is neither Basic nor Bearer", c.ref.host, challenge)
}

// token asks the registry's token service for a token to pull and push the
// repository.
func (c *registry) token(ctx context.Context, realm, service, basic string) (string, error) {
	u, err := url.Parse(realm)
	if err != nil || u.Scheme != "https" && !(u.Scheme == "http" && c.ref.loopback) {
		return "", fmt.Errorf("%s names the token service %q: not an https URL", c.ref.host, realm)
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	q.Set("scope", "repository:"+c.ref.repo+":pull,push")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	if basic != "" {
		req.Header.Set("Authorization", basic)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	data := readBounded(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s's token service refuses a token to push %s: %s %s (%s)", c.ref.host, c.ref.repo, resp.Status, strings.TrimSpace(string(data)), authFilesHint)
	}
	var answer struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(data, &answer); err != nil || cmp.Or(answer.Token, answer.AccessToken) == "" {
		return "", fmt.Errorf("%s's token service answers no token (%v)", c.ref.host, err)
	}
	return cmp.Or(answer.Token, answer.AccessToken), nil
}

// parseChallenge splits a WWW-Authenticate header, `Bearer
// realm="https://…",service="…",scope="repository:x:pull,push"`, into its
// scheme, lower case, and its parameters; quoted values may hold commas.
func parseChallenge(header string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(header), " ")
	params := map[string]string{}
	for {
		key, after, ok := strings.Cut(strings.TrimLeft(rest, " ,"), "=")
		if !ok {
			return strings.ToLower(scheme), params
		}
		var value string
		if quoted, ok := strings.CutPrefix(after, `"`); ok {
			value, rest, _ = strings.Cut(quoted, `"`)
		} else {
			value, rest, _ = strings.Cut(after, ",")
		}
		params[strings.ToLower(strings.TrimSpace(key))] = value
	}
}
