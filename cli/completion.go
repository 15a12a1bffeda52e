package cli

import (
	_ "embed"
	"fmt"
	"runtime"

	ucli "github.com/urfave/cli/v2"
)

var (
	//go:embed completion/volctl.bash
	bashCompletion string
	//go:embed completion/volctl.zsh
	zshCompletion string
)

func completionCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Description: "Load it in the current shell with  source <(volctl completion bash)\n" +
			"or install it, e.g.  volctl completion bash > /etc/bash_completion.d/volctl",
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf(c, "completion needs exactly one shell: bash or zsh")
			}
			switch c.Args().First() {
			case "bash":
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(c.App.Writer, zshCompletion)
				return err
			}
			return usageErrorf(c, "unknown shell %q: want bash or zsh", c.Args().First())
		},
	}
}

func versionCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "version",
		Usage:     "print volctl's version",
		ArgsUsage: " ",
		Action: func(c *ucli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf(c, "version takes no arguments")
			}
			_, err := fmt.Fprintf(c.App.Writer, "volctl %s (%s %s/%s)\n",
				Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
