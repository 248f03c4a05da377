// The sdtune command line. Each subcommand lives in its own file; this one only dispatches.
import { engineDemo } from './demo.ts';

const USAGE = `usage: sdtune <command> [options]

commands:
  demo                 run the demo (trains a small network on the CPU and prints its loss)
  help                 this text
`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'demo':
      engineDemo({ steps: rest.includes('--quick') ? 30 : 200 });
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      process.stderr.write(`sdtune: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

const isMain = process.argv[1] && /(?:main\.ts|sdtune(?:\.mjs)?)$/.test(process.argv[1]);
if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`sdtune: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
