export * from '../index';

/** Set when the native addon could not be loaded on this platform (the native API is then absent). */
export declare const nativeLoadError: Error | undefined;

/** Plugin name, as Nx shows it. */
export declare const name: 'nx-open-cache';

/** Nx hook: starts the cache proxy and points Nx's remote-cache client at it. */
export declare function preTasksExecution(
  options: Record<string, unknown> | undefined,
  context: { id?: string; workspaceRoot: string; argv?: readonly string[] },
): Promise<void>;

/** Nx hook: stops the proxy, prints and saves the run summary. */
export declare function postTasksExecution(
  options: Record<string, unknown> | undefined,
  context: { id?: string; workspaceRoot: string },
): Promise<void>;
