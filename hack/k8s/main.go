// Command berth-k8s is a multi-call binary holding the upstream Kubernetes control
// plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl), an
// embedded etcd and the node components (kubelet, kube-proxy), built from upstream Go modules so that Berth can run a real control
// plane on a machine with no container engine and no release downloads.
//
// Usage: berth-k8s <component> [flags...], or call it through a symlink named after
// the component.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kubeproxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
)

var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy"}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if !contains(name) {
		if len(args) == 0 || !contains(args[0]) {
			fmt.Fprintf(os.Stderr, "usage: %s {%s} [flags]\n", name, strings.Join(components, "|"))
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	// Cobra reads os.Args[1:]; make it look as if the component was called directly.
	os.Args = append([]string{name}, args...)
	switch name {
	case "etcd":
		os.Exit(runEtcd(args))
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubelet":
		// NewKubeletCommand needs a real context (nil panics); upstream's main passes
		// context.Background() too, and the kubelet handles SIGTERM itself.
		os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background())))
	case "kube-proxy":
		os.Exit(cli.Run(kubeproxy.NewProxyCommand()))
	case "kubectl":
		if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
			// kubectl's own error printing has already happened.
			os.Exit(1)
		}
	}
}

func contains(name string) bool {
	for _, c := range components {
		if c == name {
			return true
		}
	}
	return false
}

// runEtcd starts a single-member etcd with the few flags a local control plane needs.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "etcd-data", "directory for etcd data")
	client := fs.String("listen-client-urls", "http://127.0.0.1:2379", "client URL (one)")
	peer := fs.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL (one)")
	quota := fs.Int64("quota-backend-bytes", 2<<30, "backend size quota in bytes")
	unsafeNoFsync := fs.Bool("unsafe-no-fsync", false, "skip fsync (local development only)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name = "berth"
	cfg.Dir = *dataDir
	cfg.LogLevel = "warn"
	cfg.QuotaBackendBytes = *quota
	cfg.UnsafeNoFsync = *unsafeNoFsync
	cu, err := url.Parse(*client)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: --listen-client-urls: %v\n", err)
		return 2
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: --listen-peer-urls: %v\n", err)
		return 2
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintln(os.Stderr, "etcd: ready on", cu.String())
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		return 0
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}
