/** Which database engine this test run uses: set by scripts/run-tests.mjs. */
export const ENGINE: 'pglite' | 'postgres' = process.env.FABRIC_TEST_ENGINE === 'postgres' ? 'postgres' : 'pglite';

/** Server URL (maintenance database) for the PostgreSQL suite. */
export const PG_ADMIN_URL = process.env.FABRIC_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** Name of the migrated template database the PostgreSQL suite clones per test file. */
export const PG_TEMPLATE_DB = process.env.FABRIC_TEST_PG_TEMPLATE ?? 'fabric_test_template';

/** Tarball of a migrated PGlite data dir the PGlite suite loads per test. */
export const PGLITE_TEMPLATE = process.env.FABRIC_TEST_PGLITE_TEMPLATE;

/** The URL of database `name` on the test server. */
export function pgUrl(name: string): string {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}
