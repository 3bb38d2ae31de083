import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.fabric/**', '.test-tmp/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'error',
    },
  },
  {
    // isolation-runtime-prd §3.3: every multi-table write goes through withTransaction(), which
    // logs and counts rollbacks. Opening a transaction any other way is refused here.
    files: ['src/**/*.ts', 'test/**/*.ts'],
    ignores: ['src/db/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.property.name='transaction']",
          message: 'Use withTransaction() from src/db: it logs every ROLLBACK with its stack and counts it (FR-07, FR-09).',
        },
      ],
    },
  },
  {
    // The CLI and scripts talk to people on stdout/stderr on purpose.
    files: ['src/cli/**', 'scripts/**', 'bin/**', 'bench/**', 'test/**', 'src/**/*.test.ts'],
    rules: { 'no-console': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: { globals: globals.node },
  },
  {
    // plain CommonJS: the sandbox helpers (run by node inside sandboxes) and example agents
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
