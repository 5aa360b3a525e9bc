/** The command line of this run (runCli sets it): `berth agent`'s launcher starts versions with it. */
export const invocation: { argv: readonly string[] } = { argv: [] };
