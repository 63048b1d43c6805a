/**
 * The operator's file intel: YARA rules (compiled before they are kept) and hash lists
 * (sha256, sha1 or md5 digests, each with the verdict a match gives), and the verdict of a
 * file judged by them.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { AegisError } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { iso, type Clock } from '../clock.js';
import type { Yara, YaraScan } from './yara.js';

export const FILE_VERDICTS = ['malicious', 'suspicious', 'clean', 'unknown'] as const;
export type FileVerdict = (typeof FILE_VERDICTS)[number];
export const HASH_ALGORITHMS = ['sha256', 'sha1', 'md5'] as const;
export type HashAlgorithm = (typeof HASH_ALGORITHMS)[number];
export const HASH_HEX_LENGTH: Record<HashAlgorithm, number> = { sha256: 64, sha1: 40, md5: 32 };

export interface YaraRule {
  id: string;
  name: string;
  source: string;
  verdict: 'malicious' | 'suspicious';
  description: string | null;
  created_by: string;
  created_at: string;
}

export interface HashListEntry {
  id: string;
  list: string;
  algorithm: HashAlgorithm;
  hash: string;
  verdict: 'malicious' | 'suspicious' | 'clean';
  description: string | null;
  created_by: string;
  created_at: string;
}

export interface FileJudgement {
  verdict: FileVerdict;
  /** YARA rules that matched: the uploaded rule's name and id, the YARA rule inside it, its verdict. */
  yara_matches: Array<{ rule_id: string; name: string; rule: string; verdict: string }>;
  /** Hash list entries the file's digests are on. */
  hash_list_matches: Array<{ list: string; algorithm: string; hash: string; verdict: string }>;
  /** Whether bytes were scanned, and how the scan went (null: no bytes sent). */
  scan: { status: YaraScan['status']; rules: number; error?: string } | null;
}

const notFound = () => new AegisError('NOT_FOUND', 'no such id');

function isUniqueViolation(e: unknown): boolean {
  const m = String((e as Error)?.message ?? '');
  return /UNIQUE constraint failed|duplicate key value/i.test(m);
}

export class FileIntel {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly yara: Yara,
  ) {}

  async addRule(input: { name: string; source: string; verdict?: 'malicious' | 'suspicious'; description?: string | null }, actor: string): Promise<YaraRule> {
    await this.yara.check(input.source);
    const rule: YaraRule = {
      id: randomUUID(),
      name: input.name,
      source: input.source,
      verdict: input.verdict ?? 'malicious',
      description: input.description ?? null,
      created_by: actor,
      created_at: iso(this.clock.now()),
    };
    try {
      await this.db.insertInto('yara_rules').values(rule).execute();
    } catch (e) {
      if (isUniqueViolation(e)) throw new AegisError('CONFLICT', `a YARA rule named ${input.name} exists`);
      throw e;
    }
    return rule;
  }

  async listRules(): Promise<YaraRule[]> {
    return (await this.db.selectFrom('yara_rules').selectAll().orderBy('created_at').orderBy('id').execute()) as YaraRule[];
  }

  async deleteRule(id: string): Promise<YaraRule> {
    const row = await this.db.selectFrom('yara_rules').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound();
    await this.db.deleteFrom('yara_rules').where('id', '=', id).execute();
    return row as YaraRule;
  }

  async addHash(input: { list: string; algorithm: HashAlgorithm; hash: string; verdict: HashListEntry['verdict']; description?: string | null }, actor: string): Promise<HashListEntry> {
    const entry: HashListEntry = {
      id: randomUUID(),
      list: input.list,
      algorithm: input.algorithm,
      hash: input.hash.toLowerCase(),
      verdict: input.verdict,
      description: input.description ?? null,
      created_by: actor,
      created_at: iso(this.clock.now()),
    };
    if (entry.hash.length !== HASH_HEX_LENGTH[entry.algorithm]) {
      throw new AegisError('VALIDATION_FAILED', `a ${entry.algorithm} digest is ${HASH_HEX_LENGTH[entry.algorithm]} hex digits`, { details: [{ path: '/hash', message: `must be ${HASH_HEX_LENGTH[entry.algorithm]} hex digits for ${entry.algorithm}` }] });
    }
    try {
      await this.db.insertInto('hash_list_entries').values(entry).execute();
    } catch (e) {
      if (isUniqueViolation(e)) throw new AegisError('CONFLICT', `${entry.algorithm} ${entry.hash} is already on list ${entry.list}`);
      throw e;
    }
    return entry;
  }

  async listHashes(list?: string): Promise<HashListEntry[]> {
    let s = this.db.selectFrom('hash_list_entries').selectAll();
    if (list !== undefined) s = s.where('list', '=', list);
    return (await s.orderBy('list').orderBy('created_at').orderBy('id').execute()) as HashListEntry[];
  }

  async deleteHash(id: string): Promise<HashListEntry> {
    const row = await this.db.selectFrom('hash_list_entries').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound();
    await this.db.deleteFrom('hash_list_entries').where('id', '=', id).execute();
    return row as HashListEntry;
  }

  /**
   * Judges a file by its digests and, when given, its bytes (already checked against the
   * digests). malicious: a malicious list entry or a malicious rule matched; else suspicious:
   * a suspicious one did; else clean: a clean (allow) list entry matched, or the bytes were
   * scanned by at least one rule to the end and none matched; else unknown (no bytes, no
   * rules, or a scan that timed out or failed).
   */
  async judge(digests: Partial<Record<HashAlgorithm, string>>, bytes: Buffer | null): Promise<FileJudgement> {
    const pairs = HASH_ALGORITHMS.filter((a) => digests[a] !== undefined).map((a) => [a, digests[a]!] as const);
    const hits = pairs.length === 0
      ? []
      : await this.db
          .selectFrom('hash_list_entries')
          .select(['list', 'algorithm', 'hash', 'verdict'])
          .where((eb) => eb.or(pairs.map(([a, h]) => eb.and([eb('algorithm', '=', a), eb('hash', '=', h)]))))
          .orderBy('list')
          .orderBy('algorithm')
          .execute();
    let scan: FileJudgement['scan'] = null;
    const yaraMatches: FileJudgement['yara_matches'] = [];
    if (bytes !== null) {
      const rules = await this.listRules();
      const r = await this.yara.scan(rules.map((x) => ({ id: x.id, source: x.source })), bytes);
      scan = { status: r.status, rules: rules.length, ...(r.error ? { error: r.error } : {}) };
      const byId = new Map(rules.map((x) => [x.id, x]));
      for (const m of r.matches) {
        const rule = byId.get(m.id);
        if (rule) yaraMatches.push({ rule_id: rule.id, name: rule.name, rule: m.rule, verdict: rule.verdict });
      }
    }
    const verdicts = new Set<string>([...hits.map((h) => h.verdict), ...yaraMatches.map((m) => m.verdict)]);
    let verdict: FileVerdict = 'unknown';
    if (verdicts.has('malicious')) verdict = 'malicious';
    else if (verdicts.has('suspicious')) verdict = 'suspicious';
    else if (verdicts.has('clean') || (scan !== null && scan.status === 'ok' && scan.rules > 0)) verdict = 'clean';
    return { verdict, yara_matches: yaraMatches, hash_list_matches: hits, scan };
  }
}
