#!/usr/bin/env node
/**
 * aegis-agent: the host daemon. Runs in the foreground (systemd Type=notify).
 * `aegis-agent hwid` prints this machine's hardware id and exits, without a running
 * daemon: scripts/install-agent loads the kernel module with it (hwid=).
 */
import { Command, Option } from 'commander';
import { loadConfig, type AgentConfig, type ConfigSources } from './config.js';
import { AGENT_VERSION, AgentDaemon } from './daemon.js';
import { ConfigError } from './errors.js';
import { hostFingerprint } from './hwid.js';

const EX_CONFIG = 78;

const program = new Command('aegis-agent')
  .description('Aegis host agent: licensing, kernel token, eBPF segmentation')
  .version(AGENT_VERSION)
  .option('-c, --config <path>', 'configuration file (default /etc/aegis/agent.json; env AEGIS_CONFIG)')
  .option('--server-url <url>', 'aegis-server URL')
  .option('--nats-url <url>', 'NATS URL')
  .option('--state-dir <dir>', 'state directory')
  .option('--socket <path>', 'control socket path')
  .option('--token-path <path>', 'kernel token path')
  .option('--pin-root <dir>', 'bpffs pin directory')
  .addOption(new Option('--log-format <format>', 'log format').choices(['json', 'text']))
  .addOption(new Option('--log-level <level>', 'log level').choices(['error', 'warn', 'info', 'debug']));

program
  .command('hwid')
  .description("print this machine's hardware id (the daemon's fingerprint, AEGIS_HWID_FACTS included) and exit")
  .action(async () => {
    const hw = await hostFingerprint(process.env.AEGIS_HWID_FACTS);
    process.stdout.write(`${hw.hardware_id}\n`);
  });
program.action(runDaemon);
await program.parseAsync();

function runDaemon(): void {
  const o = program.opts<{
    config?: string;
    serverUrl?: string;
    natsUrl?: string;
    stateDir?: string;
    socket?: string;
    tokenPath?: string;
    pinRoot?: string;
    logFormat?: AgentConfig['log_format'];
    logLevel?: AgentConfig['log_level'];
  }>();

  const flags: Partial<AgentConfig> = {};
  if (o.serverUrl) flags.server_url = o.serverUrl;
  if (o.natsUrl) flags.nats_url = o.natsUrl;
  if (o.stateDir) flags.state_dir = o.stateDir;
  if (o.socket) flags.socket_path = o.socket;
  if (o.tokenPath) flags.token_path = o.tokenPath;
  if (o.pinRoot) flags.pin_root = o.pinRoot;
  if (o.logFormat) flags.log_format = o.logFormat;
  if (o.logLevel) flags.log_level = o.logLevel;
  const sources: ConfigSources = { configPath: o.config, flags };

  let daemon: AgentDaemon;
  try {
    daemon = new AgentDaemon(loadConfig(sources).config, sources);
  } catch (e) {
    process.stderr.write(`aegis-agent: ${(e as Error).message}\n`);
    process.exit(e instanceof ConfigError ? EX_CONFIG : 1);
  }

  let exiting = false;
  const shutdown = (signal: string) => {
    if (exiting) return;
    exiting = true;
    // systemd gives TimeoutStopSec; we promise well under 5 s.
    const force = setTimeout(() => {
      daemon.log.error('shutdown took too long; exiting');
      process.exit(1);
    }, 4500);
    force.unref();
    daemon
      .stop()
      .then(() => {
        daemon.log.info('stopped', { signal });
        process.exit(0);
      })
      .catch(() => process.exit(1));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    void daemon.reload().catch(() => undefined);
  });

  daemon.start().catch((e: unknown) => {
    daemon.log.error('start failed', { error: (e as Error).message });
    process.stderr.write(`aegis-agent: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
