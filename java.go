package main

// Java: each JVM's cacerts, merged in its own format (keystore.go), so that
// every JVM process, exec sessions included, trusts our CAs with no option
// at all. A JVM reads no PEM, and no JDK has a "PEM" KeyStore type. A store
// the hook cannot rewrite (encrypted, keyed, another password) gets the
// fallback: a JKS of the merged bundle in the staging directory, named by
// JAVA_TOOL_OPTIONS, which the wrapper sets for PID 1 and its children.

import (
	"fmt"
	"path"
	"strings"
)

const (
	maxJVMs      = 32      // entries of /usr/lib/jvm taken as JVM homes
	maxStoreSize = 4 << 20 // a JVM's cacerts is about 160 KiB
)

// javaFormat merges ours into a cacerts, in the format it has.
var javaFormat = trustFormat{limit: maxStoreSize, merge: mergeJavaStore}

// javaStores finds the cacerts of every JVM in the image: JAVA_HOME, the
// JVM behind each java in PATH (following its symlinks, inside the image),
// and the usual homes (/usr/lib/jvm/*, Temurin's /opt/java/openjdk).
func javaStores(in *injection) ([]string, error) {
	var homes []string
	if home := envValue(in.env, "JAVA_HOME"); path.IsAbs(home) {
		homes = append(homes, path.Clean(home))
	}
	for _, dir := range searchPath(envValue(in.env, "PATH")) {
		if !isRegular(in.root, dir+"/java") {
			continue
		}
		if java, err := in.root.canonical(dir + "/java"); err == nil {
			homes = append(homes, path.Dir(path.Dir(java)))
		}
	}
	jvms, err := listDir(in.root, "/usr/lib/jvm", nil, maxJVMs)
	for _, j := range jvms {
		homes = append(homes, "/usr/lib/jvm/"+j)
	}
	homes = append(homes, "/opt/java/openjdk")
	var candidates []string
	for _, home := range uniqueDirs(homes) {
		// JDK 9 and later, then JDK 8's layout (and a JRE's home inside a JDK).
		candidates = append(candidates, home+"/lib/security/cacerts", home+"/jre/lib/security/cacerts")
	}
	return uniqueFiles(in.root, candidates), err
}

// mergeJavaStore adds the certificates of ours a truststore lacks.
func mergeJavaStore(data []byte, ours *caBundle) ([][]byte, int, error) {
	store, err := parseJavaStore(data)
	if err != nil {
		return nil, 0, err
	}
	added := store.add(ours)
	if added == 0 {
		return nil, 0, nil
	}
	merged, err := store.marshal()
	return merged, added, err
}

// javaFallback gives the JVMs whose store could not be merged the
// fallback store, named by JAVA_TOOL_OPTIONS after whatever the pod set
// (a pod that names a trustStore itself keeps it).
func javaFallback(in *injection, changes []fileChange, res *langResult) error {
	if !hasAction(changes, actionFallback) {
		return nil
	}
	trust, err := in.stagedTrust()
	var store [][]byte
	if err == nil {
		store, err = fallbackStore(trust)
	}
	if err == nil && !in.dryRun {
		err = in.staging.writeFileAs(stagedJavaStore, in.trustAttrs, store...)
	}
	if err != nil {
		return fmt.Errorf("write JVM fallback truststore: %w", err)
	}
	if opts := envValue(in.env, "JAVA_TOOL_OPTIONS"); !strings.Contains(opts, "javax.net.ssl.trustStore=") {
		res.appendEnv["JAVA_TOOL_OPTIONS"] = "-Djavax.net.ssl.trustStore=" + containerDir + "/" + stagedJavaStore +
			" -Djavax.net.ssl.trustStoreType=JKS -Djavax.net.ssl.trustStorePassword=" + storePassword
	}
	return nil
}

// fallbackStore is a bundle as the JKS fallback store, in parts.
func fallbackStore(trust []byte) ([][]byte, error) {
	certs, err := bundleCertificates(trust, maxStoreEntries)
	if err != nil {
		return nil, err
	}
	store := &javaStore{format: storeJKS, password: storePassword, entries: make([]storeEntry, len(certs))}
	for i, der := range certs {
		store.entries[i] = storeEntry{alias: fmt.Sprintf("cert-%d", i), der: der}
	}
	return store.marshal()
}
