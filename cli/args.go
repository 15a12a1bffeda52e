package cli

import (
	"slices"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// Options may follow a command's arguments, as the issues and the README write them
// (`volctl send vol@snap --from vol@old -o FILE`): urfave's parser stops at the first argument,
// so intersperse moves the leaf command's options in front of its arguments before parsing.
// Everything after "--" stays an argument; an option's value is taken along when the option
// is one that takes a value and is not written NAME=VALUE. No volume or snapshot name starts
// with "-"; a directory that does can be written ./-dir or after "--".

// bashCompletionFlag is urfave's completion request, which it looks for as the last argument.
const bashCompletionFlag = "--generate-bash-completion"

// intersperse returns args (args[0] the program) with the options of the command they name
// moved before that command's arguments.
func intersperse(app *ucli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	flags, cmds := app.Flags, app.Commands
	for {
		opts, n := leadingOptions(flags, rest)
		out = append(out, opts...)
		rest = rest[n:]
		if len(rest) == 0 {
			return out
		}
		c := findCommand(cmds, rest[0])
		if c == nil {
			break // the arguments of the command reached (or an unknown one: urfave says so)
		}
		out = append(out, rest[0])
		rest = rest[1:]
		if len(c.Subcommands) == 0 {
			flags, cmds = c.Flags, nil
			continue
		}
		flags, cmds = c.Flags, c.Subcommands
	}
	if cmds != nil {
		return append(out, rest...) // a command group: nothing to reorder
	}
	var opts, plain []string
	completion := len(rest) > 0 && rest[len(rest)-1] == bashCompletionFlag
	if completion {
		rest = rest[:len(rest)-1]
	}
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			plain = append(plain, rest[i:]...)
			i = len(rest)
		case isOption(a):
			opts = append(opts, a)
			if takesValue(flags, a) && i+1 < len(rest) {
				i++
				opts = append(opts, rest[i])
			}
		default:
			plain = append(plain, a)
		}
	}
	out = append(append(out, opts...), plain...)
	if completion {
		out = append(out, bashCompletionFlag)
	}
	return out
}

// leadingOptions returns the options at the start of args (with their values) and how many
// arguments they took.
func leadingOptions(flags []ucli.Flag, args []string) ([]string, int) {
	i := 0
	for i < len(args) && isOption(args[i]) && args[i] != "--" && args[i] != bashCompletionFlag {
		if takesValue(flags, args[i]) && i+1 < len(args) {
			i++
		}
		i++
	}
	return args[:i], i
}

func isOption(a string) bool { return len(a) > 1 && strings.HasPrefix(a, "-") }

// takesValue reports whether option a (without "=VALUE") names a flag that takes a value.
func takesValue(flags []ucli.Flag, a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	name := strings.TrimLeft(a, "-")
	for _, f := range flags {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		if d, ok := f.(ucli.DocGenerationFlag); ok {
			return d.TakesValue()
		}
	}
	return false
}

func findCommand(cmds []*ucli.Command, name string) *ucli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
