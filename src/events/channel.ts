/** NOTIFY channel announcing that new system events committed (an empty payload: streams re-read by id). */
export const EVENTS_CHANNEL = 'fabric_events';
