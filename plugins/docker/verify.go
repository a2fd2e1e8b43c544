package docker

import (
	"fmt"

	"github.com/docker/cli/cli/command"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"

	"github.com/bkcache/bkcache/pkg/printer"
)

func newVerifyCommand(dockerCli command.Cli) *cobra.Command {
	var cacheName, platform, output string
	cmd := &cobra.Command{
		Use:   "verify IMAGE...",
		Short: "Prove the cache serves an image: fetch it cold, then warm, and check the upstream was not asked again",
		Long: `Fetches each image's manifest, config and layers through the cache twice,
straight from the registry (the Docker daemon's own image store is not in the
way), prints both timings and byte counts, and tells whether the upstream was
asked for any blob the second time: from the front's counters (blob downloads
started during each pass), or, for registry:2 alone (--plain), from its log.
Exits non-zero when it was. IMAGE may name the upstream (hub.bktencent.com/blueking/x:1), the cache
(127.0.0.1:5500/blueking/x:1) or neither (blueking/x:1).

Without --cache, the cache is the one at the address IMAGE names, else the one
cache proxying the registry IMAGE names, else the only cache on this engine;
when several could serve, the error lists them.`,
		Example: `  docker bkcache verify blueking/slug-app:v1.1.0-beta.27
  docker bkcache verify --cache dockerio library/busybox:1.36 --platform linux/arm64 -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var plat *v1.Platform
			if platform != "" {
				p, err := v1.ParsePlatform(platform)
				if err != nil {
					return fmt.Errorf("invalid --platform %q: %w (e.g. linux/amd64)", platform, err)
				}
				plat = p
			}
			var results []cache.VerifyResult
			bad := 0
			var names []string
			for _, image := range args {
				c, err := cache.Choose(cmd.Context(), dockerCli.Client(), cacheName, image, "--cache NAME")
				if err != nil {
					return err
				}
				names = append(names, c.Spec.Name)
				res, err := cache.Verify(cmd.Context(), dockerCli.Client(), c.Spec.Name, image, cache.VerifyOptions{Platform: plat, Progress: dockerCli.Err()})
				if err != nil {
					return err
				}
				if !res.WarmFromCache {
					bad++
				}
				results = append(results, res)
			}
			if ok, err := printer.Structured(dockerCli.Out(), output, results); ok {
				if err != nil {
					return err
				}
			} else {
				for _, r := range results {
					printVerify(dockerCli, r)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d images were fetched from the upstream again on the warm pass; see \"docker bkcache logs %s\"", bad, len(results), names[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheName, "cache", "", "name of the cache to verify (default: the one IMAGE names, or the only one)")
	cmd.Flags().StringVar(&platform, "platform", "", "platform to fetch from a multi-platform image (default linux/amd64)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json|yaml")
	return cmd
}

func printVerify(dockerCli command.Cli, r cache.VerifyResult) {
	w := dockerCli.Out()
	fmt.Fprintf(w, "image      %s via %s (%s)\n", r.Image, r.Via, r.Platform)
	fmt.Fprintf(w, "blobs      %d, %s; %d in the cache before\n", r.Blobs, printer.Bytes(r.Bytes), r.CachedBefore)
	fmt.Fprintf(w, "cold pass  %7.2fs  %10s  upstream blob fetches: %d\n", r.Cold.Seconds, printer.Bytes(r.Cold.Bytes), r.Cold.UpstreamBlobFetches)
	fmt.Fprintf(w, "warm pass  %7.2fs  %10s  upstream blob fetches: %d\n", r.Warm.Seconds, printer.Bytes(r.Warm.Bytes), r.Warm.UpstreamBlobFetches)
	if r.WarmFromCache {
		speed := ""
		if r.Warm.Seconds > 0 {
			speed = fmt.Sprintf(" (%.1fx the cold pass)", r.Cold.Seconds/r.Warm.Seconds)
		}
		fmt.Fprintf(w, "result     ok: the warm pass was served from the cache%s\n", speed)
		if r.CachedBefore == r.Blobs {
			fmt.Fprintln(w, "note       every blob was cached before: the cold pass was warm too")
		}
	} else {
		fmt.Fprintln(w, "result     FAILED: the cache asked the upstream for blobs again")
	}
}
