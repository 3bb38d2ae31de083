import { setLogger, createLogger } from '../../src/telemetry/index.js';
import { buildTemplate } from './db.js';

setLogger(createLogger({ level: 'warn' }));
await buildTemplate();
